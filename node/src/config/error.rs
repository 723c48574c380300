//! Why a configuration was refused: [`ConfigError`].

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {file}: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
    /// The text is not well-formed XML.
    #[error("{file}:{line}:{column}: malformed XML: {message}")]
    Syntax { file: String, line: usize, column: usize, message: String },
    /// Well-formed XML that breaks the schema or a rule. `element` is how the
    /// element is shown (`<server number="2">`); `field` is an attribute name
    /// (`sync-port`) or a child element (`<servers>`).
    #[error("{file}:{line}:{column}: {element}{}: {message}", with_space(.field))]
    Invalid {
        file: String,
        line: usize,
        column: usize,
        element: String,
        field: Option<String>,
        message: String,
    },
    /// An override (see [`Config::apply_overrides`]) was refused.
    #[error("{file}: after overrides: {element} {field}: {message}")]
    Override { file: String, element: String, field: String, message: String },
}

fn with_space(field: &Option<String>) -> String {
    field.as_deref().map(|f| format!(" {f}")).unwrap_or_default()
}

impl ConfigError {
    /// The file (or source name) the error is about.
    pub fn file(&self) -> &str {
        match self {
            ConfigError::Io { file, .. }
            | ConfigError::Syntax { file, .. }
            | ConfigError::Invalid { file, .. }
            | ConfigError::Override { file, .. } => file,
        }
    }

    /// 1-based line, when the error is about a place in the file.
    pub fn line(&self) -> Option<usize> {
        match self {
            ConfigError::Syntax { line, .. } | ConfigError::Invalid { line, .. } => Some(*line),
            _ => None,
        }
    }

    /// 1-based column (in characters), when the error is about a place in the file.
    pub fn column(&self) -> Option<usize> {
        match self {
            ConfigError::Syntax { column, .. } | ConfigError::Invalid { column, .. } => {
                Some(*column)
            }
            _ => None,
        }
    }

    /// The field at fault: an attribute name (`sync-port`) or a child element
    /// in angle brackets (`<servers>`).
    pub fn field(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { field, .. } => field.as_deref(),
            ConfigError::Override { field, .. } => Some(field),
            _ => None,
        }
    }
}
