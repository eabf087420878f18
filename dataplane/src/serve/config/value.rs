//! Values every section uses: sizes ([`Size`]) and the names LIO's
//! `dev_config` can carry.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::error::{err, ConfigError};

/// A byte count written as an integer or a size string ("64KiB", "1G").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Int(n) => Ok(Size(n)),
            Raw::Text(s) => bdev::parse_size(&s)
                .map(Size)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// Written back as the integer byte count.
impl Serialize for Size {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(self.0)
    }
}

/// A name LIO's `dev_config` can carry: non-empty, no `/` or `:` or spaces.
pub(super) fn check_name(key: &str, name: &str) -> Result<(), ConfigError> {
    if name.is_empty() {
        return err(format!("{key}: must not be empty"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| *c == '/' || *c == ':' || c.is_whitespace() || c.is_control())
    {
        return err(format!(
            "{key}: {name:?} contains {c:?}; names may not contain '/', ':' or spaces"
        ));
    }
    Ok(())
}
