//! `SCAN MATCH` patterns for keys: a text escaped from the glob, and every key of a prefix.

/// Escapes the characters `SCAN MATCH` treats as a glob.
pub(crate) fn glob_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// The `SCAN MATCH` patterns of every key of `namespace` that starts with `prefix`. A key
/// longer than MAX_KEY_LEN is stored as its readable part, `\#` and a hash: a prefix reaching
/// past that part matches every such key that shares it (removing one that only shares the
/// readable part costs a reload, never a stale read).
pub(crate) fn prefix_patterns(namespace: &str, prefix: &str) -> Vec<String> {
    let namespace = glob_escape(namespace);
    let mut patterns = vec![format!("{namespace}:{{{}*", glob_escape(prefix))];
    if let Some(readable) = super::readable_part_of_long_prefix(prefix) {
        patterns.push(format!("{namespace}:{{{}\\\\#*", glob_escape(readable)));
    }
    patterns
}
