//! PLACEHOLDER replaced at merge by the wt-edit branch (image edit rules).
use std::path::Path;
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutFormat { Jpeg, Png, Webp }
impl OutFormat {
    pub fn parse(s: &str) -> Option<Self> { match s { "jpeg" | "jpg" => Some(OutFormat::Jpeg), "png" => Some(OutFormat::Png), "webp" => Some(OutFormat::Webp), _ => None } }
    pub fn content_type(self) -> &'static str { match self { OutFormat::Jpeg => "image/jpeg", OutFormat::Png => "image/png", OutFormat::Webp => "image/webp" } }
    pub fn as_str(self) -> &'static str { match self { OutFormat::Jpeg => "jpeg", OutFormat::Png => "png", OutFormat::Webp => "webp" } }
}
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EditRules { pub enabled: bool, pub max_width: u32, pub max_height: u32, pub format: Option<OutFormat>, pub quality: u8, pub max_pixels: u64 }
impl Default for EditRules { fn default() -> Self { EditRules { enabled: false, max_width: 0, max_height: 0, format: None, quality: 85, max_pixels: 100_000_000 } } }
pub fn is_editable(content_type: &str) -> bool { content_type.starts_with("image/") }
pub struct Edited { pub content_type: String, pub width: u32, pub height: u32, pub original_width: u32, pub original_height: u32 }
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    #[error("image of {width}x{height} has more than {max} pixels")] TooLarge { width: u32, height: u32, max: u64 },
    #[error("not a valid image: {0}")] Invalid(String),
    #[error("cannot encode the edited image: {0}")] Encode(String),
    #[error("{0}")] Io(#[from] std::io::Error),
}
impl EditError { pub fn code(&self) -> &'static str { match self { EditError::TooLarge { .. } => "image_too_large", EditError::Invalid(_) => "invalid_image", _ => "internal" } } }
pub fn apply(_rules: &EditRules, _content_type: &str, _input: &Path, _output: &Path) -> Result<Option<Edited>, EditError> { Ok(None) }
