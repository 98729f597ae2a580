//! The `key` template: text with `<arg>`, `<arg.field.field>` or `<arg.method()>` placeholders,
//! any of them with `:display` to render through `Display`.

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Segment {
    Text(String),
    /// `<root.path.to.field>`: `root` names a parameter (or `self`, or a type parameter),
    /// without `r#`; a field ending in `()` is a method call with no arguments.
    Placeholder {
        root: String,
        fields: Vec<String>,
        /// `:display`: rendered through `Display` instead of `KeyPart`.
        display: bool,
    },
}

/// Parses and checks a template. Errors say what to write instead.
pub(crate) fn parse(template: &str) -> Result<Vec<Segment>, String> {
    if template.is_empty() {
        return Err("the key template is empty; write e.g. key = \"user:<id>\"".to_owned());
    }
    let mut segments = Vec::new();
    let mut rest = template;
    while !rest.is_empty() {
        match rest.find(['<', '>']) {
            Some(at) if rest.as_bytes()[at] == b'>' => {
                return Err(format!(
                    "unbalanced `>` in key template `{template}`: placeholders are written `<name>`"
                ));
            }
            Some(open) => {
                push_text(&mut segments, &rest[..open], template)?;
                let after = &rest[open + 1..];
                let close = after
                    .find(['<', '>'])
                    .filter(|&i| after.as_bytes()[i] == b'>');
                let Some(close) = close else {
                    return Err(format!(
                        "unbalanced `<` in key template `{template}`: close the placeholder with `>`"
                    ));
                };
                segments.push(placeholder(&after[..close], template)?);
                rest = &after[close + 1..];
            }
            None => {
                push_text(&mut segments, rest, template)?;
                rest = "";
            }
        }
    }
    check_separated(&segments)?;
    Ok(segments)
}

fn push_text(segments: &mut Vec<Segment>, text: &str, template: &str) -> Result<(), String> {
    if text.is_empty() {
        return Ok(());
    }
    if let Some(c) = text.chars().find(|c| matches!(c, '{' | '}' | '\\')) {
        return Err(format!(
            "`{c}` is not allowed in key template `{template}`: cached-redis adds the braces of the Redis Cluster hash tag and escapes argument values itself"
        ));
    }
    segments.push(Segment::Text(text.to_owned()));
    Ok(())
}

fn placeholder(inner: &str, template: &str) -> Result<Segment, String> {
    let (path, display) = match inner.rsplit_once(':') {
        Some((path, "display")) => (path, true),
        Some((_, format)) => {
            return Err(format!(
                "`<{inner}>` in key template `{template}`: `:{format}` is not a format; `<{}:display>` renders a value through `Display`",
                inner.split(':').next().unwrap_or_default()
            ));
        }
        None => (inner, false),
    };
    let mut parts = path.split('.').map(str::trim);
    let root = parts.next().unwrap_or_default();
    let root = root.strip_prefix("r#").unwrap_or(root);
    let fields: Vec<&str> = parts.collect();
    let valid = |s: &str| {
        // Raw identifiers cannot be these.
        if let Some(raw) = s.strip_prefix("r#")
            && matches!(raw, "self" | "Self" | "super" | "crate" | "_")
        {
            return false;
        }
        let s = s.strip_prefix("r#").unwrap_or(s);
        let mut chars = s.chars();
        chars.next().is_some_and(|c| c == '_' || c.is_alphabetic())
            && chars.all(|c| c == '_' || c.is_alphanumeric())
            && s != "_"
    };
    let valid_field =
        |f: &&str| valid(f) || f.parse::<u32>().is_ok() || f.strip_suffix("()").is_some_and(valid);
    if !valid(root) || !fields.iter().all(valid_field) {
        return Err(format!(
            "`<{inner}>` in key template `{template}` is not an argument name, a field path like `<user.id>` or a method call like `<email.to_lowercase()>`"
        ));
    }
    Ok(Segment::Placeholder {
        root: root.to_owned(),
        fields: fields.into_iter().map(str::to_owned).collect(),
        display,
    })
}

/// Two placeholders need a `:` between them, or distinct values could render the same key.
fn check_separated(segments: &[Segment]) -> Result<(), String> {
    let mut previous: Option<&Segment> = None;
    let mut separated = true;
    for segment in segments {
        match segment {
            Segment::Text(text) => separated |= text.contains(':'),
            Segment::Placeholder { .. } => {
                if let Some(before) = previous.filter(|_| !separated) {
                    return Err(format!(
                        "placeholders {} and {} must be separated by `:` (as in `{}:{}`), or distinct arguments could render the same key",
                        show(before),
                        show(segment),
                        show(before),
                        show(segment)
                    ));
                }
                previous = Some(segment);
                separated = false;
            }
        }
    }
    Ok(())
}

pub(crate) fn show(segment: &Segment) -> String {
    match segment {
        Segment::Text(text) => text.clone(),
        Segment::Placeholder {
            root,
            fields,
            display,
        } => {
            let mut s = format!("<{root}");
            for f in fields {
                s.push('.');
                s.push_str(f);
            }
            if *display {
                s.push_str(":display");
            }
            s.push('>');
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Segment {
        Segment::Text(s.to_owned())
    }
    fn ph(root: &str, fields: &[&str]) -> Segment {
        Segment::Placeholder {
            root: root.to_owned(),
            fields: fields.iter().map(|f| (*f).to_owned()).collect(),
            display: false,
        }
    }

    #[test]
    fn parses_templates() {
        assert_eq!(
            parse("user:<id>:v1").unwrap(),
            [text("user:"), ph("id", &[]), text(":v1")]
        );
        assert_eq!(
            parse("<user.id>:<self.tenant>").unwrap(),
            [ph("user", &["id"]), text(":"), ph("self", &["tenant"])]
        );
        assert_eq!(parse("<pair.0>").unwrap(), [ph("pair", &["0"])]);
        assert_eq!(parse("<r#type>").unwrap(), [ph("type", &[])]);
        assert_eq!(
            parse("<email.to_lowercase()>").unwrap(),
            [ph("email", &["to_lowercase()"])]
        );
        let Segment::Placeholder { display, .. } = &parse("<day:display>").unwrap()[0] else {
            panic!()
        };
        assert!(display);
        assert_eq!(parse("static").unwrap(), [text("static")]);
    }

    #[test]
    fn rejects_bad_templates() {
        for (bad, needle) in [
            ("", "empty"),
            ("user:<id", "unbalanced `<`"),
            ("user:id>", "unbalanced `>`"),
            ("user:<<id>>", "unbalanced `<`"),
            ("user:<>", "not an argument name"),
            ("user:<1x>", "not an argument name"),
            ("user:<a.>", "not an argument name"),
            ("user:<a.b(1)>", "not an argument name"),
            ("user:<a.r#self>", "not an argument name"),
            ("user:<a.99999999999>", "not an argument name"),
            ("user:<a._>", "not an argument name"),
            ("user:<a:debug>", "`:debug` is not a format"),
            ("<a><b>", "separated by `:`"),
            ("<a>-<b>", "separated by `:`"),
            ("user:{<id>}", "`{` is not allowed"),
            ("a\\b", "`\\` is not allowed"),
        ] {
            let err = parse(bad).unwrap_err();
            assert!(err.contains(needle), "{bad}: {err}");
        }
        assert!(parse("<a>-x:<b>").is_ok());
    }
}
