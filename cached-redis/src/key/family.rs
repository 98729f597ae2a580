//! Key families: every key one template renders (`user:<id>:v1` for any `id`), for removing a
//! function's entries without touching another template's that share its prefix.

use std::collections::HashSet;

use crate::{Key, KeyPart};

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    /// Any argument value: escaped text, with no unescaped `:`, `{`, `}` or `\`; with
    /// `integer`, an optional `-` and digits only.
    Part {
        integer: bool,
    },
}

/// Every key a template renders, whatever its arguments: `user:<id>:v1` matches `user:42:v1`
/// and `user:x\:y:v1` (a string id with a colon, escaped), but neither `user:42:v2` nor
/// `user:42:v1:extra`. Built the way [`Key::builder`] builds one key, with [`part`] where the
/// key has an argument. [`Cache::invalidate_family`](crate::Cache::invalidate_family) removes
/// the family's entries; the attribute generates `invalidate_all_<fn>()` with it.
///
/// [`part`]: KeyFamilyBuilder::part
///
/// ```
/// use cached_redis::{Key, KeyFamily};
///
/// let family = KeyFamily::builder().text("user:").part().text(":v1").build();
/// assert!(family.matches(&Key::builder().text("user:").part(&42u64).text(":v1").build()));
/// assert!(family.matches(&Key::builder().text("user:").part("a:b").text(":v1").build()));
/// assert!(!family.matches(&Key::raw("user:42:v2")));
/// assert!(!family.matches(&Key::raw("user:42:v1:extra")));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFamily {
    pieces: Vec<Piece>,
}

/// Builds a [`KeyFamily`] (see [`KeyFamily::builder`]).
#[derive(Debug, Clone)]
pub struct KeyFamilyBuilder {
    pieces: Vec<Piece>,
    /// Mirrors [`crate::KeyBuilder`]: whether a part came since the last `:` of text, so that
    /// parts in a row get the `:` keys put between them.
    after_part: bool,
}

impl KeyFamily {
    /// Starts a family: text and parts in the order the template has them.
    ///
    /// ```
    /// let family = cached_redis::KeyFamily::builder().text("page:").part().build();
    /// assert!(family.matches(&cached_redis::Key::raw("page:3")));
    /// ```
    pub fn builder() -> KeyFamilyBuilder {
        KeyFamilyBuilder {
            pieces: Vec::new(),
            after_part: false,
        }
    }

    /// Whether the template renders `key` for some arguments. A key shortened for its length
    /// (see [`MAX_KEY_LEN`](crate::MAX_KEY_LEN)) matches if its readable start could begin
    /// such a key.
    ///
    /// ```
    /// use cached_redis::{Key, KeyFamily};
    ///
    /// let family = KeyFamily::builder().text("list:").part().text(":").part().build();
    /// assert!(family.matches(&Key::raw("list:books:2")));
    /// assert!(!family.matches(&Key::raw("list:books")));
    /// ```
    pub fn matches(&self, key: &Key) -> bool {
        self.matches_rendered(key.as_str())
    }

    /// The same test on the text between a Redis key's braces.
    pub(crate) fn matches_rendered(&self, rendered: &str) -> bool {
        match shortened_start(rendered) {
            Some(start) => self.accepts(start, true),
            None => self.accepts(rendered, false),
        }
    }

    /// The template text before its first part: every key of the family starts with it.
    pub(crate) fn fixed_start(&self) -> String {
        let mut start = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => start.push_str(text),
                Piece::Part { .. } => break,
            }
        }
        start
    }

    /// Whether `text` is a key of the family or, with `prefix`, the start of one.
    fn accepts(&self, text: &str, prefix: bool) -> bool {
        let tokens = tokens(text);
        accepts_from(&self.pieces, &tokens, prefix, &mut HashSet::new())
    }
}

impl KeyFamilyBuilder {
    /// Template text, verbatim.
    ///
    /// ```
    /// let family = cached_redis::KeyFamily::builder().text("settings").build();
    /// assert!(family.matches(&cached_redis::Key::raw("settings")));
    /// ```
    pub fn text(mut self, text: &str) -> Self {
        match self.pieces.last_mut() {
            Some(Piece::Text(last)) => last.push_str(text),
            _ => self.pieces.push(Piece::Text(text.to_owned())),
        }
        self.after_part &= !text.contains(':');
        self
    }

    /// Any argument value (a `<placeholder>` of the template), with the `:` that
    /// [`KeyBuilder::part`](crate::KeyBuilder::part) puts between parts in a row.
    ///
    /// ```
    /// let family = cached_redis::KeyFamily::builder().part().part().build();
    /// assert!(family.matches(&cached_redis::Key::builder().part(&1u8).part(&2u8).build()));
    /// ```
    pub fn part(self) -> Self {
        self.push_part(false)
    }

    /// An argument value of type `T`: as [`part`](KeyFamilyBuilder::part), but for an integer
    /// type only an optional `-` and digits match there, so `item:<id>` with an integer `id`
    /// leaves `item:7-full` (another template's) alone. The attribute writes its arguments'
    /// types so where it can name them.
    ///
    /// ```
    /// use cached_redis::{Key, KeyFamily};
    ///
    /// let items = KeyFamily::builder().text("item:").part_of::<u64>().build();
    /// assert!(items.matches(&Key::builder().text("item:").part(&7u64).build()));
    /// assert!(!items.matches(&Key::raw("item:7-full")));
    /// let by_name = KeyFamily::builder().text("item:").part_of::<str>().build();
    /// assert!(by_name.matches(&Key::raw("item:7-full")), "a name may be `7-full`");
    /// ```
    pub fn part_of<T: KeyPart + ?Sized>(self) -> Self {
        self.push_part(T::INTEGER)
    }

    /// [`part_of`](KeyFamilyBuilder::part_of) with what the attribute found of the type.
    #[doc(hidden)]
    pub fn push_part(mut self, integer: bool) -> Self {
        if self.after_part {
            self = self.text(":");
        }
        self.pieces.push(Piece::Part { integer });
        self.after_part = true;
        self
    }

    /// A part whose value is known: written as [`KeyBuilder::part`](crate::KeyBuilder::part)
    /// writes it, so only keys with this value there match (the attribute writes a `<T>`
    /// placeholder so, with the type's name).
    ///
    /// ```
    /// use cached_redis::{Key, KeyFamily};
    ///
    /// let tenant_7 = KeyFamily::builder().text("t:").fixed(&7u32).text(":user:").part().build();
    /// assert!(tenant_7.matches(&Key::builder().text("t:").part(&7u32).text(":user:").part("a:b").build()));
    /// assert!(!tenant_7.matches(&Key::raw("t:8:user:a")));
    /// ```
    pub fn fixed<T: KeyPart + ?Sized>(mut self, value: &T) -> Self {
        if self.after_part {
            self = self.text(":");
        }
        let written = crate::key::written_part(value);
        match self.pieces.last_mut() {
            Some(Piece::Text(last)) => last.push_str(&written),
            _ => self.pieces.push(Piece::Text(written)),
        }
        self.after_part = true;
        self
    }

    /// Finishes the family.
    ///
    /// ```
    /// let family = cached_redis::KeyFamily::builder().text("a:").part().build();
    /// assert!(!family.matches(&cached_redis::Key::raw("b:1")));
    /// ```
    pub fn build(self) -> KeyFamily {
        KeyFamily {
            pieces: self.pieces,
        }
    }
}

/// The readable start of a key shortened for its length (`<start>\#<64 hex digits>`). The
/// marker is found by reading escapes in order: a part's own `\` is always written `\\`, so
/// `\#` only ever is the marker.
fn shortened_start(rendered: &str) -> Option<&str> {
    let mut chars = rendered.char_indices();
    while let Some((at, c)) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some((_, '#')) => {
                    let hash = &rendered[at + 2..];
                    let is_hash = hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit());
                    return is_hash.then(|| &rendered[..at]);
                }
                Some(_) => {}
                None => return None,
            }
        }
    }
    None
}

/// A key's text cut into tokens: an escape (`\` and the character after it) or one character.
fn tokens(text: &str) -> Vec<&str> {
    let mut out = Vec::with_capacity(text.len());
    let mut chars = text.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        let end = match (c, chars.peek()) {
            ('\\', Some(&(next, escaped))) => {
                chars.next();
                next + escaped.len_utf8()
            }
            _ => at + c.len_utf8(),
        };
        out.push(&text[at..end]);
    }
    out
}

/// How many of `tokens`, from the first, can belong to one argument's value: escapes, and
/// characters a key part never writes unescaped, except that a list writes an element's own
/// escape `\:` as `\\:`, so after a `\\` a `:`, `{` or `}` belongs to the value too. (That
/// lets a part also take a value ending in `\` with the template's `:` after it, which can
/// only make a family match more keys, never fewer.)
fn part_run(tokens: &[&str]) -> usize {
    let mut run = 0;
    for (i, token) in tokens.iter().enumerate() {
        let escape = token.starts_with('\\') && token.len() > 1;
        let after_list_escape = i > 0 && tokens[i - 1] == "\\\\";
        let delimiter = matches!(*token, ":" | "{" | "}" | "\\");
        if !(escape || !delimiter || after_list_escape && *token != "\\") {
            break;
        }
        run += 1;
    }
    run
}

/// Whether `tokens` are what `pieces` render (with `prefix`: the start of it). A part takes
/// any run of tokens that may belong to a value, settled by what follows; `failed` remembers
/// the (pieces left, tokens left) states that did not match, so no state is tried twice.
fn accepts_from(
    pieces: &[Piece],
    tokens: &[&str],
    prefix: bool,
    failed: &mut HashSet<(usize, usize)>,
) -> bool {
    let Some((piece, rest)) = pieces.split_first() else {
        return tokens.is_empty();
    };
    if failed.contains(&(pieces.len(), tokens.len())) {
        return false;
    }
    let accepted = match piece {
        Piece::Text(text) => {
            // Token by token: text holds escapes where a known part was written into it.
            let expected = self::tokens(text);
            let mut whole = true;
            for (at, want) in expected.iter().enumerate() {
                match tokens.get(at) {
                    Some(token) if token == want => {}
                    None if prefix => return true,
                    _ => {
                        whole = false;
                        break;
                    }
                }
            }
            whole && accepts_from(rest, &tokens[expected.len()..], prefix, failed)
        }
        Piece::Part { integer: false } => {
            let longest = part_run(tokens);
            (prefix && longest == tokens.len())
                || (0..=longest).any(|taken| accepts_from(rest, &tokens[taken..], prefix, failed))
        }
        Piece::Part { integer: true } => {
            let sign = usize::from(tokens.first() == Some(&"-"));
            let digits = tokens[sign..]
                .iter()
                .take_while(|t| t.len() == 1 && t.as_bytes()[0].is_ascii_digit())
                .count();
            (prefix && sign + digits == tokens.len())
                || (1..=digits)
                    .any(|taken| accepts_from(rest, &tokens[sign + taken..], prefix, failed))
        }
    };
    if !accepted {
        failed.insert((pieces.len(), tokens.len()));
    }
    accepted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn family(template: &[Option<&str>]) -> KeyFamily {
        template
            .iter()
            .fold(KeyFamily::builder(), |b, piece| match piece {
                Some(text) => b.text(text),
                None => b.part(),
            })
            .build()
    }

    #[test]
    fn a_template_matches_only_its_own_keys() {
        let user = family(&[Some("user:"), None, Some(":v1")]);
        let key = |id: &str| Key::builder().text("user:").part(id).text(":v1").build();
        for id in ["42", "", "a:b", "x{y}z", "back\\slash", "ü", "v1:v1"] {
            assert!(user.matches(&key(id)), "{}", key(id).as_str());
        }
        for other in [
            "user:42:v2",
            "user:42",
            "user:42:v1:x",
            "users:42:v1",
            "user:4:2:v1",
        ] {
            assert!(!user.matches(&Key::raw(other)), "{other}");
        }
        // A longer template sharing the start is another family.
        let page = family(&[Some("list:"), None]);
        let paged = Key::builder()
            .text("list:")
            .part("a")
            .text(":")
            .part(&2u8)
            .build();
        assert!(!page.matches(&paged));
        assert!(family(&[Some("list:"), None, Some(":"), None]).matches(&paged));
        assert_eq!(user.fixed_start(), "user:");
    }

    #[test]
    fn an_integer_part_takes_only_an_integers_text() {
        let items = KeyFamily::builder().text("item:").part_of::<&u64>().build();
        let item = |id: i64| Key::builder().text("item:").part(&id).build();
        for id in [0, 7, -3, i64::MAX] {
            assert!(items.matches(&item(id)), "{}", item(id).as_str());
        }
        for other in ["item:7-full", "item:", "item:-", "item:7:8", "item:x7"] {
            assert!(!items.matches(&Key::raw(other)), "{other}");
        }
        let sized = KeyFamily::builder()
            .text("list:")
            .part_of::<u32>()
            .part_of::<String>()
            .build();
        assert!(sized.matches(&Key::builder().text("list:").part(&3u32).part("a:b").build()));
        assert!(!sized.matches(&Key::raw("list:x:a")));
    }

    #[test]
    fn parts_in_a_row_and_lists() {
        let pair = family(&[Some("p:"), None, None]);
        assert!(pair.matches(&Key::builder().text("p:").part(&1u8).part("x:y").build()));
        assert!(!pair.matches(&Key::raw("p:1")));
        let ids = family(&[Some("ids:"), None]);
        assert!(ids.matches(&Key::builder().text("ids:").part(&[1u8, 2, 3][..]).build()));
        let empty: &[u8] = &[];
        assert!(ids.matches(&Key::builder().text("ids:").part(empty).build()));
        // A list writes an element's `\:` as `\\:`.
        let slots = family(&[Some("slots:"), None, Some(":v1")]);
        for list in [&["a:b", "{c}"][..], &["x\\", "y,z"], &["12:00", ""]] {
            let key = Key::builder().text("slots:").part(list).text(":v1").build();
            assert!(slots.matches(&key), "{}", key.as_str());
        }
    }

    #[test]
    fn a_shortened_key_matches_by_its_readable_start() {
        let user = family(&[Some("user:"), None, Some(":v1")]);
        let long = "x".repeat(crate::MAX_KEY_LEN * 2);
        let key = Key::builder()
            .text("user:")
            .part(long.as_str())
            .text(":v1")
            .build();
        assert!(key.as_str().contains("\\#"), "shortened");
        assert!(user.matches(&key));
        let other = Key::builder().text("item:").part(long.as_str()).build();
        assert!(!user.matches(&other));
        // A value holding `\#` and hex digits is not taken for the marker.
        let tricky = format!("\\#{}", "a".repeat(64));
        let key = Key::builder()
            .text("user:")
            .part(tricky.as_str())
            .text(":v1")
            .build();
        assert!(user.matches(&key), "{}", key.as_str());
    }

    #[test]
    fn a_fixed_part_matches_only_its_value() {
        let name = std::any::type_name::<String>();
        let of_string = KeyFamily::builder().text("s:").fixed(name).part().build();
        let key = |ty: &str| Key::builder().text("s:").part(ty).part("x").build();
        assert!(of_string.matches(&key(name)), "{}", key(name).as_str());
        assert!(!of_string.matches(&key(std::any::type_name::<u32>())));
    }

    #[test]
    fn many_parts_match_in_polynomial_time() {
        let pieces: Vec<Option<&str>> = (0..12).flat_map(|_| [Some("x"), None]).collect();
        let family = family(&pieces);
        let key = Key::raw("x".repeat(200) + "y");
        let started = std::time::Instant::now();
        assert!(!family.matches(&key));
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }
}
