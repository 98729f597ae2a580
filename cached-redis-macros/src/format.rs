//! `codec = "msgpack"` and `compress_above = "16KiB"`: how a function's values are written,
//! parsed at compile time.

/// A codec as written.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum CodecSpec {
    Json,
    MessagePack,
}

const CODECS: &str = "expected \"json\" or \"msgpack\"";

pub(crate) fn parse_codec(text: &str) -> Result<CodecSpec, String> {
    match text.trim() {
        "json" => Ok(CodecSpec::Json),
        "msgpack" => Ok(CodecSpec::MessagePack),
        other => Err(format!("unknown codec `{other}`; {CODECS}")),
    }
}

const SIZES: &str =
    "expected a size like \"512B\", \"16KiB\" or \"1MiB\" (units: B, KiB, MiB), or \"never\"";

/// A size in bytes (`"16KiB"`), or `None` for `"never"`.
pub(crate) fn parse_size(text: &str) -> Result<Option<usize>, String> {
    let text = text.trim();
    if text == "never" {
        return Ok(None);
    }
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    if digits == 0 {
        return Err(SIZES.to_owned());
    }
    let amount: usize = text[..digits]
        .parse()
        .map_err(|_| format!("`{text}` is too large"))?;
    let per_unit: usize = match text[digits..].trim_start() {
        "B" => 1,
        "KiB" => 1024,
        "MiB" => 1024 * 1024,
        "" => return Err(format!("`{text}` is missing a unit; {SIZES}")),
        unit @ ("KB" | "kB" | "MB" | "K" | "M" | "k" | "m" | "b") => {
            return Err(format!(
                "unit `{unit}` is ambiguous; write it in bytes, KiB (1024 B) or MiB"
            ));
        }
        other => return Err(format!("unknown unit `{other}`; {SIZES}")),
    };
    amount
        .checked_mul(per_unit)
        .map(Some)
        .ok_or_else(|| format!("`{text}` is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512B"), Ok(Some(512)));
        assert_eq!(parse_size("16KiB"), Ok(Some(16 * 1024)));
        assert_eq!(parse_size("1 MiB"), Ok(Some(1024 * 1024)));
        assert_eq!(parse_size("0B"), Ok(Some(0)));
        assert_eq!(parse_size("never"), Ok(None));
        assert!(parse_size("16").unwrap_err().contains("missing a unit"));
        assert!(parse_size("16KB").unwrap_err().contains("ambiguous"));
        assert!(parse_size("big").unwrap_err().contains("expected a size"));
        assert!(parse_size("16GiB").unwrap_err().contains("unknown unit"));
    }

    #[test]
    fn codecs() {
        assert_eq!(parse_codec("msgpack"), Ok(CodecSpec::MessagePack));
        assert_eq!(parse_codec("json"), Ok(CodecSpec::Json));
        assert!(parse_codec("bincode").unwrap_err().contains("\"msgpack\""));
    }
}
