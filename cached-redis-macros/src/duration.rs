//! Durations (`"500ms"`, `"90s"`, `"5m"`, `"1h30m"`) and jitter (`"10%"` or a duration),
//! parsed at compile time.

use std::time::Duration;

pub(crate) const DURATION_FORMS: &str = "expected a duration like \"500ms\", \"60s\", \"5m\", \"1h30m\" or \"1d\" (units: ms, s, m, h, d)";

/// Parses a sequence of `<integer><unit>` terms, optionally separated by spaces.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(DURATION_FORMS.to_owned());
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(DURATION_FORMS.to_owned());
        }
        let amount: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("`{text}` is too large"))?;
        rest = rest[digits..].trim_start();
        if rest.starts_with(['.', ',']) {
            return Err(format!(
                "`{text}` has a fraction; write it in a smaller unit (\"1500ms\", not \"1.5s\")"
            ));
        }
        let unit_len = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let millis_per_unit: u64 = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => return Err(format!("`{text}` is missing a unit; {DURATION_FORMS}")),
            other => return Err(format!("unknown unit `{other}`; {DURATION_FORMS}")),
        };
        rest = rest[unit_len..].trim_start();
        let millis = amount
            .checked_mul(millis_per_unit)
            .ok_or_else(|| format!("`{text}` is too large"))?;
        total = total
            .checked_add(Duration::from_millis(millis))
            .ok_or_else(|| format!("`{text}` is too large"))?;
    }
    Ok(total)
}

/// A jitter as written.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum JitterSpec {
    /// Parts per million of the TTL.
    Ratio(u32),
    Fixed(Duration),
}

pub(crate) const JITTER_FORMS: &str =
    "expected a percentage of the ttl like \"10%\" or \"2.5%\", or a duration like \"5s\"";

pub(crate) fn parse_jitter(text: &str) -> Result<JitterSpec, String> {
    let Some(percent) = text.trim().strip_suffix('%') else {
        return parse_duration(text)
            .map(JitterSpec::Fixed)
            .map_err(|_| JITTER_FORMS.to_owned());
    };
    let (whole, fraction) = percent
        .trim()
        .split_once('.')
        .unwrap_or((percent.trim(), ""));
    let digits_only = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits_only(whole) || !digits_only(fraction) || fraction.len() > 4 {
        return Err(JITTER_FORMS.to_owned());
    }
    let whole: u64 = whole.parse().map_err(|_| JITTER_FORMS.to_owned())?;
    let fraction_ppm: u64 = format!("{fraction:0<4}").parse().unwrap_or(0);
    let ppm = whole.saturating_mul(10_000).saturating_add(fraction_ppm);
    if ppm >= 1_000_000 {
        return Err(format!(
            "jitter must be less than 100% of the ttl, got `{text}`"
        ));
    }
    Ok(JitterSpec::Ratio(ppm as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1h 30m 5s"), Ok(Duration::from_secs(5405)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        for bad in [
            "",
            "60",
            "s",
            "1.5s",
            "10 sec",
            "-1s",
            "99999999999999999999s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn jitters() {
        assert_eq!(parse_jitter("10%"), Ok(JitterSpec::Ratio(100_000)));
        assert_eq!(parse_jitter("2.5%"), Ok(JitterSpec::Ratio(25_000)));
        assert_eq!(parse_jitter("0.0001%"), Ok(JitterSpec::Ratio(1)));
        assert_eq!(
            parse_jitter("5s"),
            Ok(JitterSpec::Fixed(Duration::from_secs(5)))
        );
        for bad in ["100%", "150%", "%", "ten%", "1.23456%", "5"] {
            assert!(parse_jitter(bad).is_err(), "{bad}");
        }
    }
}
