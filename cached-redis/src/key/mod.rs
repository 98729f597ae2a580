//! Cache keys: rendering argument values into a readable, injective key.
//!
//! A key template such as `user:<id>:v1` renders to `user:42:v1`. Argument values are escaped so
//! that distinct values never render the same key: `\` becomes `\\`, and `:`, `{`, `}` are
//! preceded by `\`. Because the attribute requires a `:` between two placeholders and forbids `\`,
//! `{` and `}` in the template's own text, the rendered key determines the argument values: a
//! plain value's own `:` follows an odd run of backslashes, a separator none. Lists escape their
//! elements' text once more (`["a:b"]` renders `a\\:b`, a run of two, and a list's text never
//! ends in a run of two modulo four), so the run before each `:` still tells a value's from a
//! separator.
//!
//! A key longer than [`MAX_KEY_LEN`] bytes is not rejected: it is shortened to a readable
//! prefix, the marker `\#` (which no escaped text contains) and the SHA-256 of the whole key.

pub(crate) mod family;
mod part;
pub(crate) mod pattern;
pub(crate) mod spare;

use std::fmt;

/// A rendered cache key: the part between the braces of `<namespace>:{<key>}`.
///
/// The attribute builds keys from its template; code calling [`Cache::fetch`](crate::Cache::fetch)
/// builds them with [`Key::builder`] (escaping argument values) or [`Key::raw`].
///
/// ```
/// use cached_redis::Key;
///
/// let key = Key::builder().text("user:").part(&42u64).text(":v1").build();
/// assert_eq!(key.as_str(), "user:42:v1");
///
/// let a = Key::builder().part("x:y").text(":").part("z").build();
/// let b = Key::builder().part("x").text(":").part("y:z").build();
/// assert_ne!(a, b);
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Key(String);

/// A dropped key's buffer becomes the thread's spare (`key/spare.rs`): the next key rendered there
/// reuses it.
impl Drop for Key {
    #[inline]
    fn drop(&mut self) {
        spare::give_back(std::mem::take(&mut self.0));
    }
}

impl Key {
    /// Starts a key; append template text with [`KeyBuilder::text`] and values with
    /// [`KeyBuilder::part`].
    ///
    /// ```
    /// let key = cached_redis::Key::builder().text("user:").part(&42u64).text(":v1").build();
    /// assert_eq!(key.as_str(), "user:42:v1");
    /// ```
    #[inline]
    pub fn builder() -> KeyBuilder {
        KeyBuilder {
            out: KeyWriter(spare::take()),
            after_part: false,
        }
    }

    /// A key used verbatim, with no escaping (but hashed if longer than [`MAX_KEY_LEN`]). The
    /// caller guarantees that distinct entries get distinct keys.
    ///
    /// ```
    /// assert_eq!(cached_redis::Key::raw("report:daily").as_str(), "report:daily");
    /// ```
    pub fn raw(key: impl Into<String>) -> Key {
        Key(shorten(key.into()))
    }

    /// The rendered key, as it appears between the braces in Redis.
    ///
    /// ```
    /// assert_eq!(cached_redis::Key::builder().part("a:b").build().as_str(), r"a\:b");
    /// ```
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Rendered keys longer than this many bytes are stored as a prefix and a hash.
pub const MAX_KEY_LEN: usize = 256;

/// How much of an over-long key stays readable.
const KEPT_PREFIX: usize = 120;

#[inline]
fn shorten(key: String) -> String {
    if key.len() <= MAX_KEY_LEN {
        return key;
    }
    hashed(key)
}

/// [`shorten`] for a key that is too long.
#[cold]
fn hashed(key: String) -> String {
    use sha2::{Digest, Sha256};
    use std::fmt::Write as _;

    let cut = readable_len(&key);
    let digest = Sha256::digest(key.as_bytes());
    let mut short = String::with_capacity(cut + 2 + 64);
    short.push_str(&key[..cut]);
    short.push_str("\\#");
    for byte in digest {
        let _ = write!(short, "{byte:02x}");
    }
    short
}

/// How much of an over-long key stays readable when it is shortened: whole characters and
/// never half an escape (`\` followed by one char), at most [`KEPT_PREFIX`] bytes. It depends
/// only on the key's first bytes, so every key that starts with a long enough prefix keeps the
/// same readable part as the prefix itself.
fn readable_len(key: &str) -> usize {
    let mut cut = 0;
    let mut chars = key.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        let end = if c == '\\' {
            chars.next().map_or(at + 1, |(i, e)| i + e.len_utf8())
        } else {
            at + c.len_utf8()
        };
        if end > KEPT_PREFIX {
            break;
        }
        cut = end;
    }
    cut
}

/// For a prefix that reaches past the readable part of shortened keys: that readable part,
/// which every shortened key whose full text starts with the prefix also starts with.
pub(crate) fn readable_part_of_long_prefix(prefix: &str) -> Option<&str> {
    (prefix.len() + 2 > KEPT_PREFIX).then(|| &prefix[..readable_len(prefix)])
}

/// Builds a [`Key`] from template text and escaped argument values.
///
/// Two parts with no `:` between them are separated by `:` (parts escape `:`), so their
/// values never run together, whatever other text stands between them:
///
/// ```
/// use cached_redis::Key;
///
/// let a = Key::builder().part("a").part("bc").build();
/// let b = Key::builder().part("ab").part("c").build();
/// assert_eq!(a.as_str(), "a:bc");
/// assert_ne!(a, b);
/// ```
#[derive(Debug)]
pub struct KeyBuilder {
    out: KeyWriter,
    /// Whether a part was written since the last `:` of template text.
    after_part: bool,
}

impl KeyBuilder {
    /// Appends template text verbatim.
    ///
    /// ```
    /// let key = cached_redis::Key::builder().text("report:daily").build();
    /// assert_eq!(key.as_str(), "report:daily");
    /// ```
    #[inline]
    pub fn text(mut self, text: &str) -> Self {
        self.out.0.push_str(text);
        self.after_part &= !text.bytes().any(|b| b == b':');
        self
    }

    /// Appends an argument value, escaped; a `:` first if a part came since the last `:` of
    /// template text.
    ///
    /// ```
    /// let key = cached_redis::Key::builder().part(&7u32).part("x").build();
    /// assert_eq!(key.as_str(), "7:x", "parts in a row are separated by `:`");
    /// ```
    pub fn part<T: KeyPart + ?Sized>(mut self, value: &T) -> Self {
        if self.after_part {
            self.out.0.push(':');
        }
        value.write_key_part(&mut self.out);
        self.after_part = true;
        self
    }

    /// Appends a value through its `Display`, escaped like any part: the `<day:display>` form
    /// of a template, for a type with no `KeyPart`. Its `Display` must write distinct text for
    /// distinct values, or they share an entry.
    ///
    /// ```
    /// use cached_redis::Key;
    ///
    /// let key = Key::builder().text("ip:").display(&std::net::Ipv4Addr::LOCALHOST).build();
    /// assert_eq!(key.as_str(), "ip:127.0.0.1");
    /// ```
    pub fn display<T: fmt::Display + ?Sized>(mut self, value: &T) -> Self {
        if self.after_part {
            self.out.0.push(':');
        }
        use fmt::Write as _;
        let _ = write!(self.out, "{value}");
        self.after_part = true;
        self
    }

    /// Finishes the key, hashing it if it is longer than [`MAX_KEY_LEN`].
    ///
    /// ```
    /// let long = "x".repeat(cached_redis::MAX_KEY_LEN * 2);
    /// let key = cached_redis::Key::builder().part(long.as_str()).build();
    /// assert!(key.as_str().len() <= cached_redis::MAX_KEY_LEN, "{}", key.as_str().len());
    /// assert!(key.as_str().contains(r"\#"), "a readable start, a marker and a hash");
    /// ```
    #[inline]
    pub fn build(self) -> Key {
        Key(shorten(self.out.0))
    }
}

/// What [`KeyBuilder::part`] writes for `value`.
pub(crate) fn written_part<T: KeyPart + ?Sized>(value: &T) -> String {
    let mut out = KeyWriter(String::new());
    value.write_key_part(&mut out);
    out.0
}

/// Where a [`KeyPart`] writes itself. Text written through it is escaped, so an implementation
/// only has to write a representation that differs between distinct values.
///
/// It implements [`fmt::Write`], so `write!(out, "{}", value)` works.
#[derive(Debug)]
pub struct KeyWriter(String);

impl KeyWriter {
    /// Writes text, escaping the characters that delimit keys.
    ///
    /// ```
    /// use cached_redis::{Key, KeyPart, KeyWriter};
    ///
    /// struct Sku(String);
    ///
    /// impl KeyPart for Sku {
    ///     fn write_key_part(&self, out: &mut KeyWriter) {
    ///         out.write_str(&self.0); // escaped: `:` becomes `\:`
    ///     }
    /// }
    ///
    /// assert_eq!(Key::builder().part(&Sku("a:1".into())).build().as_str(), r"a\:1");
    /// ```
    pub fn write_str(&mut self, text: &str) {
        for c in text.chars() {
            if matches!(c, '\\' | ':' | '{' | '}') {
                self.0.push('\\');
            }
            self.0.push(c);
        }
    }

    /// Writes a marker that no escaped text can produce (`\` followed by `marker`). Used for
    /// values with no text of their own, such as `None`.
    ///
    /// ```
    /// use cached_redis::{Key, KeyPart, KeyWriter};
    ///
    /// struct Anyone;
    ///
    /// impl KeyPart for Anyone {
    ///     fn write_key_part(&self, out: &mut KeyWriter) {
    ///         out.write_marker('*'); // `\*`, which no escaped text can be
    ///     }
    /// }
    ///
    /// assert_eq!(Key::builder().part(&Anyone).build().as_str(), r"\*");
    /// ```
    pub fn write_marker(&mut self, marker: char) {
        debug_assert!(!matches!(marker, '\\' | ':' | '{' | '}'));
        self.0.push('\\');
        self.0.push(marker);
    }
}

impl fmt::Write for KeyWriter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        KeyWriter::write_str(self, s);
        Ok(())
    }
}

/// A value that can appear in a cache key.
///
/// Implemented for integers, `bool`, `char`, strings and references, `Box`, `Rc`, `Arc` and
/// `Option` of those; with the `uuid`, `chrono` and `time` features, for `uuid::Uuid`,
/// chrono's `NaiveDate`, `NaiveDateTime`, `NaiveTime`, `DateTime<Utc>` and
/// `DateTime<FixedOffset>`, and time's `Date`, `PrimitiveDateTime`, `Time` and
/// `OffsetDateTime` (instants with an offset in UTC, so equal instants share a key).
/// Implement it for your own id types; two distinct values must write distinct text (the
/// writer escapes it).
///
/// ```
/// use cached_redis::{Key, KeyPart, KeyWriter};
///
/// struct TenantId(u32);
///
/// impl KeyPart for TenantId {
///     fn write_key_part(&self, out: &mut KeyWriter) {
///         use std::fmt::Write;
///         let _ = write!(out, "t{}", self.0);
///     }
/// }
///
/// let key = Key::builder().text("plan:").part(&TenantId(7)).build();
/// assert_eq!(key.as_str(), "plan:t7");
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be used in a cache key",
    label = "this argument is part of the key",
    note = "for `uuid::Uuid` and `chrono`'s or `time`'s dates and times (listed in `KeyPart`'s docs), enable cached-redis's feature of that name; for a type with an injective `Display`, write `<arg:display>` in the template; for a type of your own, implement `cached_redis::KeyPart`; to key by a computed value, write a method call (`<email.to_lowercase()>`); or, if it does not change the result, leave it out of the key: take `<arg>` out of the `key` template or, without a template, write `skip = \"arg\"`"
)]
pub trait KeyPart {
    /// Writes this value's key text.
    fn write_key_part(&self, out: &mut KeyWriter);

    /// `true` only for `Option`, so that `Some(None)` and `None` render differently. Hidden,
    /// and with a default no implementation needs to change: it stays on the trait because
    /// `Option<T>`'s rendering must know whether `T` is an `Option` too, which only the trait
    /// itself can tell without specialization.
    #[doc(hidden)]
    const IS_OPTION: bool = false;

    /// `true` only for the integer types, whose key text is an optional `-` and digits: a key
    /// family ([`crate::KeyFamilyBuilder::part_of`]) then matches only such text there.
    /// Hidden, with a default, for the same reason as `IS_OPTION`.
    #[doc(hidden)]
    const INTEGER: bool = false;
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A template of text and values, as the attribute renders it: text has no `\`, `{`, `}`,
    /// and two values are separated by text containing `:`.
    fn render_values(values: &[String]) -> Key {
        let mut b = Key::builder().text("t:");
        for (i, v) in values.iter().enumerate() {
            if i > 0 {
                b = b.text(":x:");
            }
            b = b.part(v.as_str());
        }
        b.build()
    }

    /// Values as consecutive parts, with no text between them.
    fn render_adjacent(values: &[String]) -> Key {
        values
            .iter()
            .fold(Key::builder(), |b, v| b.part(v.as_str()))
            .build()
    }

    #[test]
    fn adjacent_parts_never_run_together() {
        let a = render_adjacent(&["a".into(), "bc".into()]);
        let b = render_adjacent(&["ab".into(), "c".into()]);
        assert_ne!(a, b);
        assert_eq!(a.as_str(), "a:bc");
        let slash = |a: &str, b: &str| Key::builder().part(a).text("/").part(b).build();
        assert_ne!(
            slash("a/b", "c"),
            slash("a", "b/c"),
            "text without `:` separates nothing"
        );
        let none_some = Key::builder().part(&None::<u8>).part(&Some(1u8)).build();
        let some_none = Key::builder().part(&Some(1u8)).part(&None::<u8>).build();
        assert_ne!(none_some, some_none);
    }

    proptest! {
        #[test]
        fn adjacent_parts_are_injective(
            a in proptest::collection::vec(".{0,10}|[:\\{}]{0,4}", 1..4),
            b in proptest::collection::vec(".{0,10}|[:\\{}]{0,4}", 1..4),
        ) {
            prop_assume!(a != b);
            prop_assert_ne!(render_adjacent(&a), render_adjacent(&b));
        }

        #[test]
        fn rendering_is_injective(
            a in proptest::collection::vec(".{0,40}|[:\\\\{}]{0,6}|.{300,400}", 1..4),
            b in proptest::collection::vec(".{0,40}|[:\\\\{}]{0,6}|.{300,400}", 1..4),
        ) {
            prop_assume!(a != b);
            prop_assert_ne!(render_values(&a), render_values(&b));
        }

        #[test]
        fn keys_stay_bounded_and_valid_utf8(v in ".{0,2000}") {
            let key = Key::builder().text("user:").part(v.as_str()).build();
            prop_assert!(key.as_str().len() <= MAX_KEY_LEN);
            prop_assert!(std::str::from_utf8(key.as_str().as_bytes()).is_ok());
        }
    }

    #[test]
    fn long_keys_keep_a_readable_prefix_and_a_hash() {
        let long = "é".repeat(200);
        let key = Key::builder().text("search:").part(long.as_str()).build();
        assert!(key.as_str().starts_with("search:éé"));
        let (prefix, hash) = key.as_str().rsplit_once("\\#").unwrap();
        assert!(prefix.len() <= KEPT_PREFIX);
        assert_eq!(hash.len(), 64);
        let other = Key::builder()
            .text("search:")
            .part(format!("{long}x").as_str())
            .build();
        assert_ne!(key, other);
        // A prefix never ends inside an escape.
        let colons = ":".repeat(300);
        let key = Key::builder().part(colons.as_str()).build();
        let (prefix, _) = key.as_str().rsplit_once("\\#").unwrap();
        assert!(prefix.len() % 2 == 0 && prefix.ends_with("\\:"));
    }

    fn render(parts: &[&dyn Fn(KeyBuilder) -> KeyBuilder]) -> String {
        let mut b = Key::builder();
        for p in parts {
            b = p(b);
        }
        b.build().as_str().to_owned()
    }

    #[test]
    fn plain_values_stay_readable() {
        assert_eq!(
            render(&[&|b| b.text("user:"), &|b| b.part(&42u64), &|b| b
                .text(":v1")]),
            "user:42:v1"
        );
        assert_eq!(Key::builder().part("alice").build().as_str(), "alice");
        assert_eq!(Key::builder().part(&-7i32).build().as_str(), "-7");
    }

    #[test]
    fn separators_and_escapes_are_escaped() {
        let k = |a: &str, b: &str| Key::builder().part(a).text(":").part(b).build();
        assert_ne!(k("x:y", "z"), k("x", "y:z"));
        assert_ne!(k("x\\", ":y"), k("x\\:", "y"));
        assert_eq!(k("a{b}", "c").as_str(), "a\\{b\\}:c");
        assert_eq!(k("a\\", "").as_str(), "a\\\\:");
    }

    #[test]
    fn options_are_distinct_from_every_string() {
        let k = |v: Option<&str>| Key::builder().part(&v).build();
        assert_ne!(k(None), k(Some("")));
        assert_ne!(k(None), k(Some("\\0")));
        assert_eq!(k(Some("x")).as_str(), "x");
        let n = |v: Option<Option<u8>>| Key::builder().part(&v).build();
        assert_ne!(n(None), n(Some(None)));
        assert_ne!(n(Some(Some(1))), n(Some(None)));
    }

    #[test]
    fn lists_are_injective_nested_and_with_separators_inside() {
        let render = |v: &dyn Fn(&mut KeyWriter)| {
            let mut out = KeyWriter(String::new());
            v(&mut out);
            out.0
        };
        let strings = |v: &[&str]| render(&|o| v.to_vec().write_key_part(o));
        assert_eq!(strings(&["a", "b"]), "a,b");
        assert_ne!(strings(&["a,b"]), strings(&["a", "b"]));
        assert_ne!(strings(&[]), strings(&[""]));
        let nested = |v: Vec<Vec<u8>>| render(&|o| v.write_key_part(o));
        assert_ne!(nested(vec![]), nested(vec![vec![]]));
        assert_ne!(nested(vec![vec![1, 2]]), nested(vec![vec![1], vec![2]]));
        let options = |v: Option<Vec<Option<u8>>>| render(&|o| v.write_key_part(o));
        assert_ne!(options(None), options(Some(vec![None])));
        assert_ne!(options(Some(vec![])), options(Some(vec![None])));
    }
}
