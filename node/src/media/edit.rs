//! Image edit rules applied to uploads before they are stored (MISSION G4).
//!
//! `<media><edit max-width max-height format quality max-pixels/></media>`
//! ([`EditRules`]) scales images down to fit a box and/or converts them to
//! another format. The media id is the hash of the *stored* bytes, so [`apply`]
//! runs before hashing; it is synchronous CPU work (the caller runs it in
//! `spawn_blocking`).
//!
//! Formats: JPEG, PNG and WebP in, JPEG, PNG and WebP out. The `image` crate
//! encodes WebP **lossless only** (VP8L), so [`EditRules::quality`] applies to
//! JPEG output alone, and a WebP output can be larger than a JPEG one.
//!
//! Memory: the pixel count is read from the image header and checked against
//! [`EditRules::max_pixels`] before anything is decoded, and the decoder gets
//! an allocation limit derived from it (see [`apply`]).
//!
//! What a re-encoded image keeps: pixels (with the EXIF orientation applied,
//! since no EXIF is written back) and a compatible ICC colour profile. Other
//! metadata (EXIF, XMP, text chunks) is dropped, and only the first frame of
//! an animated WebP or PNG is kept. An image that needs no change is stored
//! untouched, metadata and animation included.

use herald_proto::codes::{self, Code};
use std::fs::File;
use std::io::{self, BufReader, BufWriter};
use std::path::Path;

use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::PngEncoder;
use image::codecs::webp::WebPEncoder;
use image::error::ImageError;
use image::imageops::FilterType;
use image::metadata::Orientation;
use image::{
    DynamicImage, GrayImage, ImageDecoder, ImageEncoder, ImageFormat, ImageReader, Limits, RgbImage,
};

/// Resampling filter for scaling down: sharp, little ringing, and a third
/// cheaper than Lanczos3 on the large images this typically runs on.
const FILTER: FilterType = FilterType::CatmullRom;

/// Bytes per pixel of the widest pixel the JPEG, PNG and WebP decoders
/// produce (16-bit RGBA, from PNG).
const MAX_BYTES_PER_PIXEL: u64 = 8;

/// Allocation headroom for the decoders' own buffers (rows, metadata chunks,
/// zlib windows) beyond the decoded image itself.
const DECODER_HEADROOM: u64 = 64 * 1024 * 1024;

/// Output format of the edit rules (`<edit format>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutFormat {
    Jpeg,
    Png,
    Webp,
}

impl OutFormat {
    /// Parses a format name as written in the configuration: `jpeg` (or
    /// `jpg`), `png`, `webp`, case-insensitively.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "jpeg" | "jpg" => Some(Self::Jpeg),
            "png" => Some(Self::Png),
            "webp" => Some(Self::Webp),
            _ => None,
        }
    }

    /// The media type of files in this format: `image/jpeg`, ...
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Jpeg => "image/jpeg",
            Self::Png => "image/png",
            Self::Webp => "image/webp",
        }
    }

    /// The canonical name of the format: `jpeg`, `png`, `webp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Jpeg => "jpeg",
            Self::Png => "png",
            Self::Webp => "webp",
        }
    }

    /// The format a content type names, if it is one the rules apply to.
    fn from_content_type(content_type: &str) -> Option<Self> {
        let essence = content_type.split(';').next().unwrap_or_default().trim();
        [Self::Jpeg, Self::Png, Self::Webp]
            .into_iter()
            .find(|f| essence.eq_ignore_ascii_case(f.content_type()))
    }

    fn from_image_format(format: ImageFormat) -> Option<Self> {
        match format {
            ImageFormat::Jpeg => Some(Self::Jpeg),
            ImageFormat::Png => Some(Self::Png),
            ImageFormat::WebP => Some(Self::Webp),
            _ => None,
        }
    }

    fn image_format(self) -> ImageFormat {
        match self {
            Self::Jpeg => ImageFormat::Jpeg,
            Self::Png => ImageFormat::Png,
            Self::Webp => ImageFormat::WebP,
        }
    }
}

/// XML `<media><edit max-width max-height format quality max-pixels/></media>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EditRules {
    /// Whether uploads are edited at all.
    pub enabled: bool,
    /// Largest stored width in pixels; 0 = no limit.
    pub max_width: u32,
    /// Largest stored height in pixels; 0 = no limit.
    pub max_height: u32,
    /// Format images are stored in; `None` = keep the input's format.
    pub format: Option<OutFormat>,
    /// Encoder quality, 1..=100, for JPEG output only (WebP output is
    /// lossless, PNG always is); values outside are clamped.
    pub quality: u8,
    /// Decode refusal limit (width × height), bounds memory; 0 = no pixel
    /// count check, decoding is then bounded by the image crate's default
    /// allocation limit (512 MiB) only.
    pub max_pixels: u64,
}

impl Default for EditRules {
    fn default() -> Self {
        Self {
            enabled: false,
            max_width: 0,
            max_height: 0,
            format: None,
            quality: 85,
            max_pixels: 100_000_000,
        }
    }
}

/// True for content types the rules apply to: image/jpeg, image/png,
/// image/webp (case-insensitive, ignoring parameters like "; charset").
pub fn is_editable(content_type: &str) -> bool {
    OutFormat::from_content_type(content_type).is_some()
}

/// What [`apply`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edited {
    /// The media type of the written file.
    pub content_type: String,
    /// Size of the written image, in pixels.
    pub width: u32,
    pub height: u32,
    /// Size of the uploaded image as displayed (EXIF orientation applied).
    pub original_width: u32,
    pub original_height: u32,
}

/// Why an upload could not be edited.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    #[error("image of {width}x{height} has more than {max} pixels")]
    TooLarge { width: u32, height: u32, max: u64 },
    #[error("not a valid image: {0}")]
    Invalid(String),
    #[error("cannot encode the edited image: {0}")]
    Encode(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl EditError {
    /// The stable API error code (docs/media.md): `image_too_large` and
    /// `invalid_image` are the uploader's fault (422), the rest are ours.
    pub fn code(&self) -> Code {
        match self {
            Self::TooLarge { .. } => codes::IMAGE_TOO_LARGE,
            Self::Invalid(_) => codes::INVALID_IMAGE,
            Self::Encode(_) | Self::Io(_) => codes::INTERNAL,
        }
    }
}

/// Applies the rules to the file `input` (bytes of type `content_type`).
///
/// Returns `Ok(None)` when nothing needs changing — rules disabled, not an
/// editable type, or already within the limits *and* already in the target
/// format — and the caller then stores `input` as is. Otherwise writes the
/// edited image to `output` (created or truncated; the caller fsyncs and
/// renames) and returns what it wrote.
///
/// - The real format is guessed from the bytes: a PNG sent as `image/jpeg` is
///   decoded as a PNG, and with no `format` rule stays a PNG. If it needs no
///   other change, `output` is a byte-for-byte copy of `input` and the result
///   only corrects the content type.
/// - The dimensions are read from the header and refused over
///   [`EditRules::max_pixels`] ([`EditError::TooLarge`]) before decoding; the
///   decoder is limited to `max_pixels × 8` bytes (16-bit RGBA) for the image
///   plus 64 MiB for its own buffers. Scaling then needs about
///   `width × new height × 16` bytes more.
/// - Bytes that are not a JPEG, PNG or WebP image, or do not decode, are
///   [`EditError::Invalid`].
/// - Images are scaled down (never up), keeping the aspect ratio, to fit
///   `max_width` × `max_height` (EXIF orientation applied first, as the image
///   is displayed), with a Catmull-Rom filter.
/// - JPEG output has no alpha: transparent pixels are composited onto white.
pub fn apply(
    rules: &EditRules,
    content_type: &str,
    input: &Path,
    output: &Path,
) -> Result<Option<Edited>, EditError> {
    if !rules.enabled {
        return Ok(None);
    }
    let Some(declared) = OutFormat::from_content_type(content_type) else {
        return Ok(None);
    };

    let reader =
        ImageReader::with_format(BufReader::new(File::open(input)?), declared.image_format());
    // Falls back to the declared format when the bytes match no signature,
    // so garbage fails in that format's decoder with a useful message.
    let mut reader = reader.with_guessed_format()?;
    let source = reader
        .format()
        .and_then(OutFormat::from_image_format)
        .ok_or_else(|| EditError::Invalid("not a JPEG, PNG or WebP image".to_owned()))?;

    let mut limits = decode_limits(rules.max_pixels);
    reader.limits(limits.clone());
    // Reads the header only.
    let mut decoder = reader.into_decoder().map_err(header_error)?;
    let (width, height) = decoder.dimensions();
    // With no pixel limit, a refusal by the default allocation limit is
    // reported as the pixel count that limit allows for this colour type.
    let max = match (rules.max_pixels, limits.max_alloc) {
        (0, Some(bytes)) => bytes / u64::from(decoder.color_type().bytes_per_pixel()).max(1),
        (0, None) => u64::MAX,
        (max, _) => max,
    };
    let too_large = || EditError::TooLarge { width, height, max };
    if rules.max_pixels > 0 && u64::from(width) * u64::from(height) > rules.max_pixels {
        return Err(too_large());
    }

    // Broken metadata is not worth refusing an image that decodes.
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let (shown_width, shown_height) =
        if swaps_axes(orientation) { (height, width) } else { (width, height) };
    let target = rules.format.unwrap_or(source);
    let (new_width, new_height) = fit(shown_width, shown_height, rules.max_width, rules.max_height);
    let resized = (new_width, new_height) != (shown_width, shown_height);
    let edited = Edited {
        content_type: target.content_type().to_owned(),
        width: new_width,
        height: new_height,
        original_width: shown_width,
        original_height: shown_height,
    };

    if !resized && target == source {
        if declared == source {
            return Ok(None);
        }
        // Mislabelled but otherwise fine: keep the bytes, fix the type.
        std::fs::copy(input, output)?;
        return Ok(Some(edited));
    }

    let icc = decoder.icc_profile().ok().flatten();
    limits.reserve(decoder.total_bytes()).map_err(|_| too_large())?;
    decoder.set_limits(limits).map_err(|e| decode_error(e, too_large))?;
    let mut image = DynamicImage::from_decoder(decoder).map_err(|e| decode_error(e, too_large))?;
    image.apply_orientation(orientation);
    if resized {
        image = image.resize_exact(new_width, new_height, FILTER);
    }
    if target == OutFormat::Jpeg {
        image = without_alpha(image);
    }
    encode(&image, target, rules.quality, icc, output)?;
    Ok(Some(edited))
}

/// The largest size within `max_width` × `max_height` (0 = unbounded) with
/// the aspect ratio of `width` × `height`, never larger than it, at least
/// 1×1.
fn fit(width: u32, height: u32, max_width: u32, max_height: u32) -> (u32, u32) {
    let fits_width = max_width == 0 || width <= max_width;
    let fits_height = max_height == 0 || height <= max_height;
    if (fits_width && fits_height) || width == 0 || height == 0 {
        return (width, height);
    }
    let (w, h) = (u64::from(width), u64::from(height));
    let (mw, mh) = (u64::from(max_width), u64::from(max_height));
    // The width binds when max_width/width <= max_height/height.
    let width_binds = max_height == 0 || (max_width != 0 && mw * h <= mh * w);
    // Rounded to nearest; the result never exceeds the other bound, since the
    // exact value does not and the bound is an integer.
    let scaled =
        |num: u64, den: u64| u32::try_from((num + den / 2) / den).unwrap_or(u32::MAX).max(1);
    if width_binds {
        (max_width, scaled(h * mw, w))
    } else {
        (scaled(w * mh, h), max_height)
    }
}

/// Whether applying `orientation` swaps width and height.
fn swaps_axes(orientation: Orientation) -> bool {
    matches!(
        orientation,
        Orientation::Rotate90
            | Orientation::Rotate270
            | Orientation::Rotate90FlipH
            | Orientation::Rotate270FlipH
    )
}

/// Decoder limits for `max_pixels` (see [`apply`]).
fn decode_limits(max_pixels: u64) -> Limits {
    let mut limits = Limits::default();
    if max_pixels > 0 {
        limits.max_alloc =
            Some(max_pixels.saturating_mul(MAX_BYTES_PER_PIXEL).saturating_add(DECODER_HEADROOM));
    }
    limits
}

/// Maps an error reading the header. A limit hit here is metadata larger than
/// the whole allowance, before any dimensions are known.
fn header_error(e: ImageError) -> EditError {
    match e {
        ImageError::Limits(e) => {
            EditError::Invalid(format!("image metadata exceeds the decoding memory limit: {e}"))
        }
        e => decode_error(e, || EditError::Invalid("unexpected limit".to_owned())),
    }
}

/// Maps a decoding error: limits → `too_large()`, truncated or malformed data
/// → invalid, other I/O failures (reading our own file) → I/O.
fn decode_error(e: ImageError, too_large: impl FnOnce() -> EditError) -> EditError {
    match e {
        ImageError::Limits(_) => too_large(),
        ImageError::IoError(e)
            if !matches!(e.kind(), io::ErrorKind::UnexpectedEof | io::ErrorKind::InvalidData) =>
        {
            EditError::Io(e)
        }
        e => EditError::Invalid(e.to_string()),
    }
}

/// The image with no alpha channel, for JPEG: transparency composited onto
/// white (simply dropping alpha would show whatever colour transparent
/// pixels happen to hold, often black). Grey stays grey, colour becomes RGB8.
fn without_alpha(image: DynamicImage) -> DynamicImage {
    let color = image.color();
    if !color.has_alpha() {
        return image;
    }
    let over_white = |value: u8, alpha: u8| -> u8 {
        let (v, a) = (u32::from(value), u32::from(alpha));
        // (v·a + 255·(255 − a)) / 255, rounded; at most 255.
        ((v * a + 255 * (255 - a) + 127) / 255) as u8
    };
    if color.has_color() {
        let rgba = image.into_rgba8();
        let (w, h) = rgba.dimensions();
        let rgb = RgbImage::from_fn(w, h, |x, y| {
            let [r, g, b, a] = rgba.get_pixel(x, y).0;
            image::Rgb([over_white(r, a), over_white(g, a), over_white(b, a)])
        });
        DynamicImage::ImageRgb8(rgb)
    } else {
        let la = image.into_luma_alpha8();
        let (w, h) = la.dimensions();
        let gray = GrayImage::from_fn(w, h, |x, y| {
            let [l, a] = la.get_pixel(x, y).0;
            image::Luma([over_white(l, a)])
        });
        DynamicImage::ImageLuma8(gray)
    }
}

/// Whether an ICC profile describes the colour space of `image` (its header
/// names the data colour space at bytes 16..20): a CMYK JPEG is decoded to
/// RGB, so its profile must not be carried over.
fn icc_matches(icc: &[u8], image: &DynamicImage) -> bool {
    let wanted: &[u8] = if image.color().has_color() { b"RGB " } else { b"GRAY" };
    icc.get(16..20) == Some(wanted)
}

/// Encodes `image` as `format` into a new (or truncated) file at `output`.
fn encode(
    image: &DynamicImage,
    format: OutFormat,
    quality: u8,
    icc: Option<Vec<u8>>,
    output: &Path,
) -> Result<(), EditError> {
    let mut writer = BufWriter::new(File::create(output)?);
    let icc = icc.filter(|icc| icc_matches(icc, image));
    let result = match format {
        OutFormat::Jpeg => {
            write(image, JpegEncoder::new_with_quality(&mut writer, quality.clamp(1, 100)), icc)
        }
        OutFormat::Png => write(image, PngEncoder::new(&mut writer), icc),
        OutFormat::Webp => write(image, WebPEncoder::new_lossless(&mut writer), icc),
    };
    result.map_err(|e| match e {
        ImageError::IoError(e) => EditError::Io(e),
        e => EditError::Encode(e.to_string()),
    })?;
    writer.into_inner().map_err(io::IntoInnerError::into_error)?;
    Ok(())
}

/// Writes `image` with `encoder` (which converts to a colour type it
/// supports), embedding `icc` when given.
fn write(
    image: &DynamicImage,
    mut encoder: impl ImageEncoder,
    icc: Option<Vec<u8>>,
) -> Result<(), ImageError> {
    if let Some(icc) = icc {
        // All three encoders embed ICC profiles; a refusal only loses it.
        let _ = encoder.set_icc_profile(icc);
    }
    image.write_with_encoder(encoder)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageBuffer, Rgba, RgbaImage};
    use std::path::PathBuf;

    /// A test directory with an input written in it and an output path.
    struct Files {
        _dir: tempfile::TempDir,
        input: PathBuf,
        output: PathBuf,
    }

    fn files(input: &[u8]) -> Files {
        let dir = tempfile::tempdir().expect("tempdir");
        let input_path = dir.path().join("input");
        std::fs::write(&input_path, input).expect("write input");
        let output = dir.path().join("output");
        Files { _dir: dir, input: input_path, output }
    }

    /// A noisy RGBA image (noise so that JPEG quality changes the size).
    fn noisy(width: u32, height: u32) -> DynamicImage {
        let mut seed = 0x2545_f491_u32;
        let image = RgbaImage::from_fn(width, height, |x, y| {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            let n = seed.to_le_bytes();
            Rgba([(x % 256) as u8 ^ n[0], (y % 256) as u8 ^ n[1], n[2], 255])
        });
        DynamicImage::ImageRgba8(image)
    }

    fn encoded(image: &DynamicImage, format: ImageFormat) -> Vec<u8> {
        let mut bytes = io::Cursor::new(Vec::new());
        image.write_to(&mut bytes, format).expect("encode test image");
        bytes.into_inner()
    }

    fn png(width: u32, height: u32) -> Vec<u8> {
        encoded(&noisy(width, height), ImageFormat::Png)
    }

    fn rules(max_width: u32, max_height: u32, format: Option<OutFormat>) -> EditRules {
        EditRules { enabled: true, max_width, max_height, format, ..EditRules::default() }
    }

    fn decode(path: &Path) -> DynamicImage {
        ImageReader::open(path)
            .expect("open output")
            .with_guessed_format()
            .expect("guess")
            .decode()
            .expect("decode output")
    }

    /// The aspect ratio is kept within ±1 px: the side computed from the
    /// other is within one pixel of its exact value.
    fn assert_aspect(original: (u32, u32), edited: (u32, u32)) {
        let (ow, oh) = (f64::from(original.0), f64::from(original.1));
        let (ew, eh) = (f64::from(edited.0), f64::from(edited.1));
        assert!(
            (eh - ew * oh / ow).abs() <= 1.0 || (ew - eh * ow / oh).abs() <= 1.0,
            "{original:?} -> {edited:?}"
        );
    }

    /// A PNG too wide for the box is scaled so its width fits, keeping the
    /// aspect ratio; the written file really has the announced size.
    #[test]
    fn landscape_is_scaled_to_the_width() {
        let f = files(&png(400, 150));
        let edited = apply(&rules(100, 100, None), "image/png", &f.input, &f.output)
            .expect("apply")
            .expect("edited");
        assert_eq!(
            edited,
            Edited {
                content_type: "image/png".into(),
                width: 100,
                height: 38,
                original_width: 400,
                original_height: 150,
            }
        );
        assert_aspect((400, 150), (edited.width, edited.height));
        let out = decode(&f.output);
        assert_eq!((out.width(), out.height()), (100, 38));
        assert!(std::fs::read(&f.output).expect("read").starts_with(b"\x89PNG\r\n\x1a\n"));
    }

    /// A PNG too tall for the box is scaled so its height fits, keeping the
    /// aspect ratio.
    #[test]
    fn portrait_is_scaled_to_the_height() {
        let f = files(&png(150, 401));
        let edited = apply(&rules(100, 100, None), "image/png", &f.input, &f.output)
            .expect("apply")
            .expect("edited");
        assert_eq!((edited.width, edited.height), (37, 100));
        assert_aspect((150, 401), (edited.width, edited.height));
        let out = decode(&f.output);
        assert_eq!((out.width(), out.height()), (37, 100));
    }

    /// With only one bound set (0 = no limit), only that bound applies.
    #[test]
    fn one_unbounded_side() {
        let f = files(&png(300, 200));
        let edited = apply(&rules(0, 100, None), "image/png", &f.input, &f.output)
            .expect("apply")
            .expect("edited");
        assert_eq!((edited.width, edited.height), (150, 100));
        let f = files(&png(300, 200));
        let edited = apply(&rules(150, 0, None), "image/png", &f.input, &f.output)
            .expect("apply")
            .expect("edited");
        assert_eq!((edited.width, edited.height), (150, 100));
    }

    /// The fitting arithmetic: never scales up, rounds to nearest, keeps at
    /// least one pixel, and treats 0 as unbounded.
    #[test]
    fn fit_cases() {
        assert_eq!(fit(50, 40, 100, 100), (50, 40));
        assert_eq!(fit(100, 100, 100, 100), (100, 100));
        assert_eq!(fit(400, 150, 100, 100), (100, 38));
        assert_eq!(fit(150, 400, 100, 100), (38, 100));
        assert_eq!(fit(200, 200, 100, 50), (50, 50));
        assert_eq!(fit(10_000, 1, 100, 100), (100, 1));
        assert_eq!(fit(1, 10_000, 100, 100), (1, 100));
        assert_eq!(fit(5000, 4000, 0, 0), (5000, 4000));
        assert_eq!(fit(5000, 4000, 0, 400), (500, 400));
        assert_eq!(fit(5000, 4000, 500, 0), (500, 400));
        assert_eq!(fit(u32::MAX, u32::MAX, 1, 1), (1, 1));
    }

    /// Conversion to JPEG: a JPEG file (FF D8) without alpha, and a lower
    /// quality gives a smaller file.
    #[test]
    fn converts_to_jpeg_with_quality() {
        let input = png(256, 256);
        let mut sizes = Vec::new();
        for quality in [90, 30] {
            let f = files(&input);
            let rules = EditRules { quality, ..rules(0, 0, Some(OutFormat::Jpeg)) };
            let edited =
                apply(&rules, "image/png", &f.input, &f.output).expect("apply").expect("edited");
            assert_eq!(edited.content_type, "image/jpeg");
            assert_eq!((edited.width, edited.height), (256, 256));
            let bytes = std::fs::read(&f.output).expect("read");
            assert!(bytes.starts_with(&[0xFF, 0xD8]), "not a JPEG");
            let out = decode(&f.output);
            assert!(!out.color().has_alpha());
            assert_eq!((out.width(), out.height()), (256, 256));
            sizes.push(bytes.len());
        }
        assert!(
            sizes[1] < sizes[0],
            "quality 30 ({}) not smaller than 90 ({})",
            sizes[1],
            sizes[0]
        );
    }

    /// Converting to JPEG composites transparency onto white instead of
    /// exposing the colour held by transparent pixels.
    #[test]
    fn jpeg_conversion_composites_onto_white() {
        let image = DynamicImage::ImageRgba8(ImageBuffer::from_pixel(16, 16, Rgba([0, 0, 0, 0])));
        let f = files(&encoded(&image, ImageFormat::Png));
        apply(&rules(0, 0, Some(OutFormat::Jpeg)), "image/png", &f.input, &f.output)
            .expect("apply")
            .expect("edited");
        let out = decode(&f.output).into_rgb8();
        assert!(out.pixels().all(|p| p.0.iter().all(|&c| c >= 250)), "{:?}", out.get_pixel(0, 0));
    }

    /// Conversion to WebP (lossless): a RIFF....WEBP file that decodes back to
    /// the same pixels.
    #[test]
    fn converts_to_webp() {
        let image = noisy(64, 48);
        let f = files(&encoded(&image, ImageFormat::Png));
        let edited = apply(&rules(0, 0, Some(OutFormat::Webp)), "image/png", &f.input, &f.output)
            .expect("apply")
            .expect("edited");
        assert_eq!(edited.content_type, "image/webp");
        let bytes = std::fs::read(&f.output).expect("read");
        assert_eq!(&bytes[0..4], b"RIFF");
        assert_eq!(&bytes[8..12], b"WEBP");
        let out = decode(&f.output);
        assert_eq!(out.to_rgba8(), image.to_rgba8(), "lossless round trip");
    }

    /// Conversion to PNG from a JPEG, scaled at the same time.
    #[test]
    fn converts_to_png() {
        let f = files(&encoded(
            &DynamicImage::ImageRgb8(noisy(120, 80).into_rgb8()),
            ImageFormat::Jpeg,
        ));
        let edited = apply(&rules(60, 60, Some(OutFormat::Png)), "image/jpeg", &f.input, &f.output)
            .expect("apply")
            .expect("edited");
        assert_eq!(edited.content_type, "image/png");
        assert_eq!((edited.width, edited.height), (60, 40));
        assert!(std::fs::read(&f.output).expect("read").starts_with(b"\x89PNG\r\n\x1a\n"));
        let out = decode(&f.output);
        assert_eq!((out.width(), out.height()), (60, 40));
    }

    /// A small image already in the target format (or with no format rule)
    /// needs nothing: `None`, and no output file is written.
    #[test]
    fn small_image_in_target_format_is_untouched() {
        for format in [None, Some(OutFormat::Png)] {
            let f = files(&png(50, 40));
            let answer =
                apply(&rules(100, 100, format), "image/png", &f.input, &f.output).expect("apply");
            assert_eq!(answer, None, "{format:?}");
            assert!(!f.output.exists());
        }
        // Exactly at the limits is within them.
        let f = files(&png(100, 100));
        assert_eq!(
            apply(&rules(100, 100, None), "image/png", &f.input, &f.output).expect("apply"),
            None
        );
    }

    /// Disabled rules change nothing, however far the image is off limits.
    #[test]
    fn disabled_rules_are_a_no_op() {
        let f = files(&png(400, 400));
        let rules = EditRules { enabled: false, ..rules(10, 10, Some(OutFormat::Jpeg)) };
        assert_eq!(apply(&rules, "image/png", &f.input, &f.output).expect("apply"), None);
        assert!(!f.output.exists());
    }

    /// Content types the rules do not cover are stored as is, even when the
    /// bytes are an image (and without being read at all).
    #[test]
    fn non_image_content_type_is_a_no_op() {
        let f = files(&png(400, 400));
        let rules = rules(10, 10, Some(OutFormat::Jpeg));
        for content_type in
            ["application/octet-stream", "application/pdf", "image/gif", "text/plain"]
        {
            assert_eq!(apply(&rules, content_type, &f.input, &f.output).expect("apply"), None);
        }
        let missing = f.input.with_file_name("does-not-exist");
        assert_eq!(apply(&rules, "video/mp4", &missing, &f.output).expect("apply"), None);
    }

    /// Bytes that are not an image, stated as image/png, are `Invalid`
    /// (code `invalid_image`) — so is a truncated PNG.
    #[test]
    fn garbage_is_invalid() {
        let f = files(b"this is certainly not a PNG file, just some text");
        let err =
            apply(&rules(100, 100, None), "image/png", &f.input, &f.output).expect_err("garbage");
        assert!(matches!(err, EditError::Invalid(_)), "{err:?}");
        assert_eq!(err.code(), "invalid_image");

        let mut truncated = png(200, 200);
        truncated.truncate(truncated.len() / 2);
        let f = files(&truncated);
        let err =
            apply(&rules(100, 100, None), "image/png", &f.input, &f.output).expect_err("truncated");
        assert!(matches!(err, EditError::Invalid(_)), "{err:?}");

        let f = files(b"");
        let err =
            apply(&rules(100, 100, None), "image/jpeg", &f.input, &f.output).expect_err("empty");
        assert!(matches!(err, EditError::Invalid(_)), "{err:?}");
    }

    /// A PNG (signature, IHDR with valid CRCs) claiming 100000 × 100000
    /// pixels, whose only IDAT is an empty zlib stream: no pixel data at all.
    fn huge_png_header() -> Vec<u8> {
        fn crc32(bytes: &[u8]) -> u32 {
            let mut crc = !0u32;
            for &b in bytes {
                crc ^= u32::from(b);
                for _ in 0..8 {
                    crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
                }
            }
            !crc
        }
        fn chunk(png: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
            let len = u32::try_from(data.len()).expect("small chunk");
            png.extend_from_slice(&len.to_be_bytes());
            let typed = [&kind[..], data].concat();
            png.extend_from_slice(&typed);
            png.extend_from_slice(&crc32(&typed).to_be_bytes());
        }
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(&100_000u32.to_be_bytes());
        ihdr.extend_from_slice(&100_000u32.to_be_bytes());
        ihdr.extend_from_slice(&[8, 6, 0, 0, 0]); // 8-bit RGBA, deflate, no interlace
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        chunk(&mut png, b"IHDR", &ihdr);
        chunk(&mut png, b"IDAT", &[0x78, 0x9C, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]);
        chunk(&mut png, b"IEND", &[]);
        png
    }

    /// An image whose header claims more pixels than `max_pixels` is refused
    /// as `TooLarge` from the header alone: the file has no pixel data, so
    /// any attempt to decode it would have been `Invalid` instead.
    #[test]
    fn too_many_pixels_is_refused_from_the_header() {
        let f = files(&huge_png_header());

        let err =
            apply(&rules(100, 100, None), "image/png", &f.input, &f.output).expect_err("too large");
        assert!(
            matches!(
                err,
                EditError::TooLarge { width: 100_000, height: 100_000, max: 100_000_000 }
            ),
            "{err:?}"
        );
        assert_eq!(err.code(), "image_too_large");
        assert_eq!(err.to_string(), "image of 100000x100000 has more than 100000000 pixels");

        // With no pixel limit the image crate's 512 MiB allocation limit still
        // refuses it before allocating, as the RGBA8 pixels that would fit.
        let unlimited = EditRules { max_pixels: 0, ..rules(100, 100, None) };
        let err = apply(&unlimited, "image/png", &f.input, &f.output).expect_err("too large");
        assert!(
            matches!(err, EditError::TooLarge { width: 100_000, height: 100_000, max }
                if max == 512 * 1024 * 1024 / 4),
            "{err:?}"
        );
    }

    /// A real image just over a small `max_pixels` is refused, and one at
    /// exactly `max_pixels` is accepted.
    #[test]
    fn max_pixels_boundary() {
        let f = files(&png(100, 50));
        let rules = EditRules { max_pixels: 4999, ..rules(10, 10, None) };
        let err = apply(&rules, "image/png", &f.input, &f.output).expect_err("too large");
        assert!(
            matches!(err, EditError::TooLarge { width: 100, height: 50, max: 4999 }),
            "{err:?}"
        );
        let rules = EditRules { max_pixels: 5000, ..rules };
        assert!(apply(&rules, "image/png", &f.input, &f.output).expect("apply").is_some());
    }

    /// A PNG sent as image/jpeg is recognised from its bytes and decoded as a
    /// PNG; with no format rule it stays a PNG, labelled as one.
    #[test]
    fn png_sent_as_jpeg_is_guessed() {
        let f = files(&png(300, 300));
        let edited = apply(&rules(100, 100, None), "image/jpeg", &f.input, &f.output)
            .expect("apply")
            .expect("edited");
        assert_eq!(edited.content_type, "image/png");
        assert_eq!((edited.width, edited.height), (100, 100));
        assert!(std::fs::read(&f.output).expect("read").starts_with(b"\x89PNG"));
    }

    /// A mislabelled image that needs no other change is copied unchanged
    /// (no re-encoding) and only its content type is corrected.
    #[test]
    fn mislabelled_small_image_is_copied_with_the_right_type() {
        let input = png(20, 10);
        let f = files(&input);
        let edited = apply(&rules(100, 100, None), "image/webp", &f.input, &f.output)
            .expect("apply")
            .expect("edited");
        assert_eq!(edited.content_type, "image/png");
        assert_eq!(
            (edited.width, edited.height, edited.original_width, edited.original_height),
            (20, 10, 20, 10)
        );
        assert_eq!(std::fs::read(&f.output).expect("read"), input);
    }

    /// The EXIF orientation of a JPEG is applied before fitting: a 200×100
    /// JPEG marked "rotate 90°" is displayed 100×200 and stored upright.
    #[test]
    fn exif_orientation_is_applied() {
        // Big-endian TIFF header, one IFD entry: Orientation (0x0112), SHORT, 1, value 6.
        let exif: Vec<u8> = [
            &b"MM\0\x2a\0\0\0\x08"[..],
            &[0, 1],
            &[0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0],
            &[0, 0, 0, 0],
        ]
        .concat();
        let mut bytes = Vec::new();
        let mut encoder = JpegEncoder::new_with_quality(&mut bytes, 90);
        encoder.set_exif_metadata(exif).expect("exif");
        DynamicImage::ImageRgb8(noisy(200, 100).into_rgb8())
            .write_with_encoder(encoder)
            .expect("encode");
        let f = files(&bytes);
        let edited = apply(&rules(50, 50, None), "image/jpeg", &f.input, &f.output)
            .expect("apply")
            .expect("edited");
        assert_eq!((edited.original_width, edited.original_height), (100, 200));
        assert_eq!((edited.width, edited.height), (25, 50));
        let out = decode(&f.output);
        assert_eq!((out.width(), out.height()), (25, 50));
    }

    /// A re-encoded image keeps an ICC profile of its colour space (so its
    /// colours do not shift) and drops one of another colour space.
    #[test]
    fn icc_profile_is_carried_when_it_matches() {
        fn profile(space: &[u8; 4]) -> Vec<u8> {
            let mut icc = vec![0u8; 128];
            icc[16..20].copy_from_slice(space);
            icc
        }
        for (space, kept) in [(b"RGB ", true), (b"GRAY", false)] {
            let mut bytes = Vec::new();
            let mut encoder = PngEncoder::new(&mut bytes);
            encoder.set_icc_profile(profile(space)).expect("icc");
            noisy(40, 40).write_with_encoder(encoder).expect("encode");
            let f = files(&bytes);
            apply(&rules(20, 20, Some(OutFormat::Jpeg)), "image/png", &f.input, &f.output)
                .expect("apply")
                .expect("edited");
            let mut decoder = ImageReader::open(&f.output)
                .expect("open")
                .with_guessed_format()
                .expect("guess")
                .into_decoder()
                .expect("decoder");
            let icc = decoder.icc_profile().expect("read icc");
            assert_eq!(icc, kept.then(|| profile(space)), "{space:?}");
        }
    }

    /// Editable content types: the three formats, any case, with parameters.
    #[test]
    fn editable_content_types() {
        for ct in [
            "image/jpeg",
            "image/png",
            "image/webp",
            "IMAGE/JPEG",
            "Image/Png",
            "image/webp; charset=binary",
            " image/png ;q=1",
        ] {
            assert!(is_editable(ct), "{ct:?}");
        }
        for ct in [
            "image/gif",
            "image/jpg",
            "image/svg+xml",
            "application/octet-stream",
            "",
            "image/",
            "jpeg",
            "image/pngx",
        ] {
            assert!(!is_editable(ct), "{ct:?}");
        }
    }

    /// Format names parse (with the `jpg` alias) and map to content types and
    /// canonical names.
    #[test]
    fn out_format_names() {
        assert_eq!(OutFormat::parse("jpeg"), Some(OutFormat::Jpeg));
        assert_eq!(OutFormat::parse("jpg"), Some(OutFormat::Jpeg));
        assert_eq!(OutFormat::parse("PNG"), Some(OutFormat::Png));
        assert_eq!(OutFormat::parse("webp"), Some(OutFormat::Webp));
        assert_eq!(OutFormat::parse("gif"), None);
        assert_eq!(OutFormat::parse(""), None);
        for format in [OutFormat::Jpeg, OutFormat::Png, OutFormat::Webp] {
            assert_eq!(OutFormat::parse(format.as_str()), Some(format));
            assert_eq!(OutFormat::from_content_type(format.content_type()), Some(format));
        }
        assert_eq!(OutFormat::Jpeg.content_type(), "image/jpeg");
        assert_eq!(OutFormat::Webp.as_str(), "webp");
    }

    /// Defaults as documented, and error codes as the API names them.
    #[test]
    fn defaults_and_codes() {
        assert_eq!(
            EditRules::default(),
            EditRules {
                enabled: false,
                max_width: 0,
                max_height: 0,
                format: None,
                quality: 85,
                max_pixels: 100_000_000,
            }
        );
        assert_eq!(EditError::Invalid("x".into()).code(), "invalid_image");
        assert_eq!(EditError::Encode("x".into()).code(), "internal");
        assert_eq!(EditError::Io(io::Error::other("x")).code(), "internal");
    }
}
