//! Path safety: dot-segment removal for request paths and strict percent-decoding for path
//! parameters. Pure functions, no I/O.
//!
//! A request is handled in three steps:
//!
//! 1. [`normalize`] the path of the request target (origin form, `/a/b?q` without the `?q`),
//! 2. route the normalized path, which is still percent-encoded,
//! 3. [`decode_param`] each path parameter the router extracted.
//!
//! Every error here is the client's: a server answers `400 Bad Request`.
//!
//! # Normalization (step 1)
//!
//! - Dot segments are removed as RFC 3986 §5.2.4 removes them: `/a/./b` is `/a/b`, `/a/b/../c`
//!   is `/a/c`, `/a/b/c/./../../g` is `/a/g`.
//! - A `..` that would climb above `/` is an error ([`PathError::AboveRoot`]), not clamped to
//!   `/` as the RFC does: `/..`, `/a/../..` and `/../x` are refused. A client that sends them is
//!   probing, and answering `/x` for `/../x` would hide that.
//! - Percent-encoded dots count as dots: a segment made of exactly one or two dots, each written
//!   `.`, `%2e` or `%2E` (`%2e`, `.%2E`, `%2e%2e`, ...), is a dot segment. Decoding happens once
//!   only: `%252e` is the three characters `%2e`, not a dot.
//! - Nothing else changes. The path stays percent-encoded, so an encoded slash (`%2F`) stays
//!   inside its segment and never creates one; routing sees `/files/a%2Fb` as two segments.
//! - Empty segments are kept, as in RFC 3986: `/a//b` stays `/a//b`. A `..` removes the segment
//!   before it even when that one is empty (`/a//../b` is `/a/b`), again as in the RFC.
//! - A trailing `/.` or `/..` leaves a trailing `/`, as in the RFC: `/a/b/.` is `/a/b/`,
//!   `/a/b/..` is `/a/`, `/.` is `/`. (A router tells `/a/` from `/a`.)
//! - A path that does not start with `/` (`*`, `a/b`, the empty string) is an error
//!   ([`PathError::NotAbsolute`]): it is not the path of an origin-form target.
//!
//! # Parameters (step 3)
//!
//! - A parameter value is percent-decoded once, strictly: a `%` not followed by two hex digits
//!   (`%zz`, `%4`, a lone `%`) is an error, and so are bytes that are not UTF-8 once decoded
//!   (`%FF`).
//! - `+` stays `+`. It means a space only in form-encoded query strings, not in paths; a space in
//!   a path is `%20`.
//! - A decoded value holding a `..` segment is an error, splitting on `/` and on `\` (a plugin
//!   may join it into a Windows path): `a%2F..%2Fb`, `..%5Cx` and `..` are refused, `a..b` and
//!   `...` are not. Together with step 1 this means no value a plugin receives holds a `..`
//!   segment, whether the client wrote it raw or encoded.
//! - A decoded NUL byte (`%00`) is an error: C plugins read strings up to the first NUL, so a
//!   value could mean one thing to the host and another to the plugin.
//!
//! What a parameter may still hold: `/` (in a catch-all, or encoded as `%2F`), a leading `/`
//! (`%2Fetc`), `\`, `.` segments, `:` (`C:`). A plugin that maps values to files must still join
//! them under its own root and refuse absolute ones.

use std::borrow::Cow;

/// How many characters of a client's path or parameter an error message quotes.
const QUOTED_CHARS: usize = 100;

/// Why a request path or a path parameter is refused. Every kind is the client's error (a
/// server answers `400 Bad Request`); each message quotes the offending text, clipped to
/// [`QUOTED_CHARS`] characters and escaped as a Rust string literal, since it comes from the
/// client and may end up in logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PathError {
    /// The request path does not start with `/`.
    #[error("request path {path:?} does not start with `/`")]
    NotAbsolute {
        /// The path, clipped.
        path: String,
    },
    /// The request path has a `..` segment (raw or percent-encoded) that climbs above `/`.
    #[error("request path {path:?} climbs above the root with a `..` segment")]
    AboveRoot {
        /// The path, clipped.
        path: String,
    },
    /// A path parameter has a `%` not followed by two hexadecimal digits.
    #[error(
        "path parameter {value:?} has invalid percent-encoding at byte {at}: `%` must be followed by two hex digits (write `%` itself as `%25`)"
    )]
    InvalidPercentEncoding {
        /// The parameter as received (still encoded), clipped.
        value: String,
        /// The byte offset of the offending `%` in the unclipped value.
        at: usize,
    },
    /// A path parameter is not UTF-8 once percent-decoded.
    #[error("path parameter {value:?} is not valid UTF-8 once percent-decoded")]
    InvalidUtf8 {
        /// The parameter as received (still encoded), clipped.
        value: String,
    },
    /// A path parameter holds a `..` segment once percent-decoded (split on `/` and `\`).
    #[error("path parameter {value:?} holds a `..` segment once percent-decoded")]
    DotDotSegment {
        /// The parameter as received (still encoded), clipped.
        value: String,
    },
    /// A path parameter holds a NUL byte once percent-decoded.
    #[error("path parameter {value:?} holds a NUL byte (`%00`) once percent-decoded")]
    NulByte {
        /// The parameter as received (still encoded), clipped.
        value: String,
    },
}

impl From<PathError> for crate::error::Error {
    fn from(error: PathError) -> Self {
        Self::new(crate::error::ErrorKind::BadPath {
            reason: error.to_string(),
        })
    }
}

/// Removes the dot segments of `path`, the path of an origin-form request target (no query),
/// as described in the [module documentation](self).
///
/// Borrows `path` when it has no dot segment, which is the common case: a path with neither
/// `/.` nor `/%` is returned after one scan, without further work. The result
/// starts with `/`, is still percent-encoded, has no `.` or `..` segment (raw or encoded) and
/// is its own normalization.
///
/// # Errors
///
/// [`PathError::NotAbsolute`] when `path` does not start with `/`, [`PathError::AboveRoot`]
/// when a `..` segment climbs above `/`.
pub(crate) fn normalize(path: &str) -> Result<Cow<'_, str>, PathError> {
    let Some(segments) = path.strip_prefix('/') else {
        return Err(PathError::NotAbsolute { path: clip(path) });
    };
    // A dot segment starts right after a `/` with `.` or with `%` (of `%2e`). One pass over the
    // bytes: this runs on every request, and a substring search costs more on short paths.
    let may_have_dots = path
        .as_bytes()
        .windows(2)
        .any(|w| w[0] == b'/' && matches!(w[1], b'.' | b'%'));
    if !may_have_dots {
        return Ok(Cow::Borrowed(path));
    }
    if !segments.split('/').any(|s| dot_segment(s).is_some()) {
        return Ok(Cow::Borrowed(path));
    }
    // RFC 3986 §5.2.4 on a stack of segments: the output is `/` + the kept segments joined by
    // `/`. A dot segment that ends the path leaves an empty last segment, i.e. a trailing `/`.
    let mut kept: Vec<&str> = Vec::new();
    let mut rest = segments.split('/').peekable();
    while let Some(segment) = rest.next() {
        let last = rest.peek().is_none();
        match dot_segment(segment) {
            None => kept.push(segment),
            Some(dot) => {
                if dot == Dot::Parent && kept.pop().is_none() {
                    return Err(PathError::AboveRoot { path: clip(path) });
                }
                if last {
                    kept.push("");
                }
            }
        }
    }
    // The last segment always pushes one, so `kept` is never empty and the result starts
    // with `/`.
    let mut normalized = String::with_capacity(path.len());
    for segment in kept {
        normalized.push('/');
        normalized.push_str(segment);
    }
    Ok(Cow::Owned(normalized))
}

/// Percent-decodes the path parameter `value` and checks the result, as described in the
/// [module documentation](self): strict decoding to UTF-8, `+` stays `+`, no `..` segment (split
/// on `/` and `\`), no NUL.
///
/// Borrows `value` when it has no `%` (the checks still apply).
///
/// # Errors
///
/// [`PathError::InvalidPercentEncoding`], [`PathError::InvalidUtf8`],
/// [`PathError::DotDotSegment`] or [`PathError::NulByte`].
pub(crate) fn decode_param(value: &str) -> Result<Cow<'_, str>, PathError> {
    let decoded = if value.contains('%') {
        Cow::Owned(percent_decode(value)?)
    } else {
        Cow::Borrowed(value)
    };
    if decoded.contains('\0') {
        return Err(PathError::NulByte { value: clip(value) });
    }
    if decoded.split(['/', '\\']).any(|s| s == "..") {
        return Err(PathError::DotDotSegment { value: clip(value) });
    }
    Ok(decoded)
}

/// A dot segment: `.` or `..`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dot {
    /// `.`: the current segment, removed.
    Current,
    /// `..`: removes the segment before it.
    Parent,
}

/// Whether `segment` is one or two dots, each written `.`, `%2e` or `%2E`.
fn dot_segment(segment: &str) -> Option<Dot> {
    let mut rest = segment.as_bytes();
    let mut dots = 0;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix(b".") {
            rest = after;
        } else if rest
            .get(..3)
            .is_some_and(|h| h.eq_ignore_ascii_case(b"%2e"))
        {
            rest = &rest[3..];
        } else {
            return None;
        }
        dots += 1;
        if dots > 2 {
            return None;
        }
    }
    match dots {
        1 => Some(Dot::Current),
        2 => Some(Dot::Parent),
        _ => None,
    }
}

/// Decodes every `%XX` of `value` and requires UTF-8.
///
/// Written by hand rather than with the `percent-encoding` crate: its decoder passes a `%` that
/// is not followed by two hex digits through unchanged, and refusing those is the point here, so
/// using it would take a separate validating scan anyway; this loop decodes and validates in one
/// pass, in a dozen lines.
fn percent_decode(value: &str) -> Result<String, PathError> {
    let bytes = value.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let byte = bytes
                .get(i + 1..i + 3)
                .and_then(|hex| Some(hex_digit(hex[0])? << 4 | hex_digit(hex[1])?));
            let Some(byte) = byte else {
                return Err(PathError::InvalidPercentEncoding {
                    value: clip(value),
                    at: i,
                });
            };
            decoded.push(byte);
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(decoded).map_err(|_| PathError::InvalidUtf8 { value: clip(value) })
}

/// The value of an ASCII hexadecimal digit, either case.
fn hex_digit(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// `text` cut to [`QUOTED_CHARS`] characters, with `...` when cut, to quote in an error.
fn clip(text: &str) -> String {
    match text.char_indices().nth(QUOTED_CHARS) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `normalize`, owned, for `assert_eq!` against literals.
    fn norm(path: &str) -> Result<String, PathError> {
        normalize(path).map(Cow::into_owned)
    }

    /// `decode_param`, owned.
    fn decode(value: &str) -> Result<String, PathError> {
        decode_param(value).map(Cow::into_owned)
    }

    /// The error for a path that climbs.
    fn above(path: &str) -> Result<String, PathError> {
        Err(PathError::AboveRoot { path: path.into() })
    }

    #[test]
    fn rfc_3986_examples_for_absolute_paths() {
        assert_eq!(norm("/a/b/c/./../../g"), Ok("/a/g".into()));
        assert_eq!(norm("/mid/content=5/../6"), Ok("/mid/6".into()));
        // RFC 3986 §5.4.1 normal examples, merged onto the base path `/b/c/d;p`.
        assert_eq!(norm("/b/c/./g"), Ok("/b/c/g".into()));
        assert_eq!(norm("/b/c/g/."), Ok("/b/c/g/".into()));
        assert_eq!(norm("/b/c/."), Ok("/b/c/".into()));
        assert_eq!(norm("/b/c/./"), Ok("/b/c/".into()));
        assert_eq!(norm("/b/c/.."), Ok("/b/".into()));
        assert_eq!(norm("/b/c/../"), Ok("/b/".into()));
        assert_eq!(norm("/b/c/../g"), Ok("/b/g".into()));
        assert_eq!(norm("/b/c/../.."), Ok("/".into()));
        assert_eq!(norm("/b/c/../../"), Ok("/".into()));
        assert_eq!(norm("/b/c/../../g"), Ok("/g".into()));
        // §5.4.2: not dot segments.
        assert_eq!(norm("/b/c/g."), Ok("/b/c/g.".into()));
        assert_eq!(norm("/b/c/.g"), Ok("/b/c/.g".into()));
        assert_eq!(norm("/b/c/g.."), Ok("/b/c/g..".into()));
        assert_eq!(norm("/b/c/..g"), Ok("/b/c/..g".into()));
        assert_eq!(norm("/b/c/./../g"), Ok("/b/g".into()));
        assert_eq!(norm("/b/c/./g/."), Ok("/b/c/g/".into()));
        assert_eq!(norm("/b/c/g/./h"), Ok("/b/c/g/h".into()));
        assert_eq!(norm("/b/c/g/../h"), Ok("/b/c/h".into()));
        assert_eq!(norm("/b/c/g;x=1/./y"), Ok("/b/c/g;x=1/y".into()));
        assert_eq!(norm("/b/c/g;x=1/../y"), Ok("/b/c/y".into()));
    }

    #[test]
    fn the_traversal_from_the_report_is_refused() {
        let path = "/info/a/../../../etc/passwd";
        assert_eq!(norm(path), above(path));
    }

    #[test]
    fn encoded_dots_are_dot_segments() {
        assert_eq!(norm("/a/%2e/b"), Ok("/a/b".into()));
        assert_eq!(norm("/a/%2E/b"), Ok("/a/b".into()));
        assert_eq!(norm("/a/b/%2e%2e/c"), Ok("/a/c".into()));
        assert_eq!(norm("/a/b/%2E%2e/c"), Ok("/a/c".into()));
        assert_eq!(norm("/a/b/.%2e/c"), Ok("/a/c".into()));
        assert_eq!(norm("/a/b/%2E./c"), Ok("/a/c".into()));
        assert_eq!(norm("/a/b/%2e%2e"), Ok("/a/".into()));
        // Not dot segments: three dots, double encoding, other characters.
        assert_eq!(norm("/a/%2e%2e%2e/b"), Ok("/a/%2e%2e%2e/b".into()));
        assert_eq!(norm("/a/%252e%252e/b"), Ok("/a/%252e%252e/b".into()));
        assert_eq!(norm("/a/%2e%2e%2fb"), Ok("/a/%2e%2e%2fb".into()));
        assert_eq!(norm("/a/%2ex"), Ok("/a/%2ex".into()));
        assert_eq!(norm("/a/%2"), Ok("/a/%2".into()));
        assert_eq!(norm("/a/%"), Ok("/a/%".into()));
    }

    #[test]
    fn climbing_above_the_root_is_an_error() {
        for path in [
            "/..",
            "/../",
            "/../x",
            "/a/../..",
            "/a/../../b",
            "/%2e%2e/x",
            "/%2E%2E",
            "/.%2e/x",
            "/a/./../..",
            "/./..",
        ] {
            assert_eq!(norm(path), above(path), "{path}");
        }
        // Back to the root is fine.
        assert_eq!(norm("/a/.."), Ok("/".into()));
        assert_eq!(norm("/a/%2e%2e/"), Ok("/".into()));
    }

    #[test]
    fn trailing_dot_segments_leave_a_trailing_slash() {
        assert_eq!(norm("/."), Ok("/".into()));
        assert_eq!(norm("/a/."), Ok("/a/".into()));
        assert_eq!(norm("/a/b/.."), Ok("/a/".into()));
        assert_eq!(norm("/a/%2e"), Ok("/a/".into()));
        assert_eq!(norm("/a/./"), Ok("/a/".into()));
        assert_eq!(norm("/a/b/../"), Ok("/a/".into()));
    }

    #[test]
    fn empty_segments_are_kept() {
        assert_eq!(normalize("//"), Ok(Cow::Borrowed("//")));
        assert_eq!(normalize("/a//b"), Ok(Cow::Borrowed("/a//b")));
        assert_eq!(normalize("/a//b/"), Ok(Cow::Borrowed("/a//b/")));
        assert_eq!(norm("/a//./b"), Ok("/a//b".into()));
        // `..` removes the empty segment before it, as in the RFC.
        assert_eq!(norm("/a//../b"), Ok("/a/b".into()));
        assert_eq!(norm("//.."), Ok("/".into()));
        assert_eq!(norm("//../.."), above("//../.."));
    }

    #[test]
    fn paths_with_nothing_to_do_are_borrowed() {
        for path in [
            "/",
            "/greet/ada",
            "/files/a/b/c.txt",
            "/files/.hidden",
            "/files/a%20b",
            "/files/a%2Fb",
            "/files/%2fetc",
            "/a./b..",
            "/a/...",
        ] {
            assert!(
                matches!(normalize(path), Ok(Cow::Borrowed(p)) if p == path),
                "{path}"
            );
        }
    }

    #[test]
    fn paths_that_do_not_start_with_a_slash_are_errors() {
        for path in ["", "*", "a/b", "..", "./a", "%2F"] {
            assert_eq!(
                norm(path),
                Err(PathError::NotAbsolute { path: path.into() }),
                "{path:?}"
            );
        }
    }

    #[test]
    fn parameters_are_percent_decoded() {
        assert_eq!(decode("ada%20lovelace"), Ok("ada lovelace".into()));
        assert_eq!(decode("%C3%A9"), Ok("é".into()));
        assert_eq!(decode("%c3%a9t%C3%A9"), Ok("été".into()));
        assert_eq!(decode("a%2Fb"), Ok("a/b".into()));
        assert_eq!(decode("%25"), Ok("%".into()));
        assert_eq!(decode("%252e%252e"), Ok("%2e%2e".into()));
        assert_eq!(decode("a+b"), Ok("a+b".into()));
        assert_eq!(decode("a%2Bb"), Ok("a+b".into()));
        assert_eq!(decode(""), Ok("".into()));
        assert!(matches!(decode_param("ada"), Ok(Cow::Borrowed("ada"))));
        assert!(matches!(decode_param("a/b/c.txt"), Ok(Cow::Borrowed(_))));
        assert!(matches!(decode_param("a%20b"), Ok(Cow::Owned(_))));
    }

    #[test]
    fn invalid_percent_encoding_is_an_error() {
        for (value, at) in [
            ("%zz", 0),
            ("%", 0),
            ("a%", 1),
            ("a%4", 1),
            ("%4g", 0),
            ("%20%", 3),
        ] {
            assert_eq!(
                decode(value),
                Err(PathError::InvalidPercentEncoding {
                    value: value.into(),
                    at
                }),
                "{value}"
            );
        }
        for value in ["%FF", "%C3", "%C3%28", "%ED%A0%80"] {
            assert_eq!(
                decode(value),
                Err(PathError::InvalidUtf8 {
                    value: value.into()
                }),
                "{value}"
            );
        }
    }

    #[test]
    fn dot_dot_segments_in_parameters_are_errors() {
        for value in [
            "..",
            "%2e%2e",
            "a%2F..%2Fb",
            "a/../b",
            "..%5Cx",
            "..%5cx",
            "a\\..",
            "x/%2E.",
            "../",
        ] {
            assert_eq!(
                decode(value),
                Err(PathError::DotDotSegment {
                    value: value.into()
                }),
                "{value}"
            );
        }
        for value in ["a..b", "...", ".", "./a", "..a", "a/.../b", "%2e"] {
            assert!(decode(value).is_ok(), "{value}");
        }
    }

    #[test]
    fn nul_in_parameters_is_an_error() {
        for value in ["%00", "a%00b", "a\0b"] {
            assert_eq!(
                decode(value),
                Err(PathError::NulByte {
                    value: value.into()
                }),
                "{value:?}"
            );
        }
    }

    #[test]
    fn messages_quote_clipped_and_escaped_text() {
        let long = format!("/{}", "é".repeat(300)) + "/../../..";
        let error = normalize(&long).unwrap_err();
        let PathError::AboveRoot { path } = &error else {
            panic!("{error:?}");
        };
        assert_eq!(path.chars().count(), QUOTED_CHARS + 3);
        assert!(path.ends_with("..."));
        assert_eq!(
            PathError::AboveRoot { path: "/..".into() }.to_string(),
            "request path \"/..\" climbs above the root with a `..` segment"
        );
        let message = decode("a\0b\n%00").unwrap_err().to_string();
        assert!(message.contains(r#""a\0b\n%00""#), "{message}");
        let message = decode("%zz").unwrap_err().to_string();
        assert!(
            message.starts_with("path parameter \"%zz\" has invalid percent-encoding at byte 0")
        );
    }

    /// Whether `segment` is a dot segment, decided independently of `dot_segment`.
    fn is_dot_segment(segment: &str) -> bool {
        matches!(
            segment.to_ascii_lowercase().replace("%2e", ".").as_str(),
            "." | ".."
        )
    }

    /// RFC 3986 §5.2.4 `remove_dot_segments`, written as the RFC's loop over two string buffers;
    /// also says whether a `..` found the output empty (climbed, where the RFC clamps).
    fn rfc_remove_dot_segments(path: &str) -> (String, bool) {
        let mut input = path.to_owned();
        let mut output = String::new();
        let mut climbed = false;
        while !input.is_empty() {
            if input.starts_with("../") {
                input.replace_range(..3, "");
            } else if input.starts_with("./") {
                input.replace_range(..2, "");
            } else if input.starts_with("/./") {
                input.replace_range(..3, "/");
            } else if input == "/." {
                input = "/".into();
            } else if input.starts_with("/../") || input == "/.." {
                input.replace_range(..3, "");
                if !input.starts_with('/') {
                    input.insert(0, '/');
                }
                match output.rfind('/') {
                    Some(i) => output.truncate(i),
                    None => {
                        climbed |= output.is_empty();
                        output.clear();
                    }
                }
            } else if input == "." || input == ".." {
                input.clear();
            } else {
                let start = usize::from(input.starts_with('/'));
                let end = input[start..].find('/').map_or(input.len(), |i| i + start);
                output.push_str(&input[..end]);
                input.replace_range(..end, "");
            }
        }
        (output, climbed)
    }

    /// `path` with its encoded dot segments written as plain dots.
    fn plain_dots(path: &str) -> String {
        path.split('/')
            .map(|s| {
                if is_dot_segment(s) {
                    s.to_ascii_lowercase().replace("%2e", ".")
                } else {
                    s.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    /// Paths rich in (encoded) dot segments, empty segments and encoded separators.
    fn paths() -> impl Strategy<Value = String> {
        let segment = prop_oneof![
            Just(".".to_owned()),
            Just("..".to_owned()),
            Just("%2e".to_owned()),
            Just("%2E%2e".to_owned()),
            Just(".%2E".to_owned()),
            Just("%2e.".to_owned()),
            Just("...".to_owned()),
            Just(String::new()),
            Just("%2F".to_owned()),
            Just("a%2F..%2Fb".to_owned()),
            "[a-c]{1,3}",
            "[a-c.%2eE/\\\\]{0,6}",
        ];
        proptest::collection::vec(segment, 0..10).prop_map(|s| format!("/{}", s.join("/")))
    }

    /// Parameter values rich in (encoded) dots, separators, bad escapes and NULs.
    fn values() -> impl Strategy<Value = String> {
        let token = prop_oneof![
            Just("."),
            Just("%2e"),
            Just("%2E"),
            Just("/"),
            Just("%2F"),
            Just("\\"),
            Just("%5c"),
            Just("%5C"),
            Just("a"),
            Just("+"),
            Just("%"),
            Just("%zz"),
            Just("%00"),
            Just("%C3%A9"),
            Just("%C3"),
            Just("%FF"),
        ];
        proptest::collection::vec(token, 0..10).prop_map(|t| t.concat())
    }

    /// Every byte of `text` percent-encoded.
    fn encode_all(text: &str) -> String {
        text.bytes().map(|b| format!("%{b:02X}")).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn normalize_is_the_rfc_algorithm_except_that_climbing_is_an_error(path in paths()) {
            let (expected, climbed) = rfc_remove_dot_segments(&plain_dots(&path));
            match normalize(&path) {
                Ok(normalized) => {
                    prop_assert!(!climbed, "{path} climbs, but normalized to {normalized}");
                    prop_assert_eq!(normalized, expected);
                }
                Err(error) => {
                    prop_assert!(climbed, "{path}: {error}");
                    prop_assert_eq!(error, PathError::AboveRoot { path: clip(&path) });
                }
            }
        }

        #[test]
        fn normalize_is_idempotent(path in prop_oneof![paths(), "/\\PC{0,40}"]) {
            if let Ok(normalized) = normalize(&path) {
                prop_assert!(
                    matches!(normalize(&normalized), Ok(Cow::Borrowed(again)) if again == normalized),
                    "{path} -> {normalized}"
                );
            }
        }

        #[test]
        fn normalized_paths_have_no_dot_segments_and_stay_under_the_root(
            path in prop_oneof![paths(), "/\\PC{0,40}"]
        ) {
            if let Ok(normalized) = normalize(&path) {
                prop_assert!(normalized.starts_with('/'), "{path} -> {normalized}");
                prop_assert!(
                    !normalized.split('/').any(is_dot_segment),
                    "{path} -> {normalized}"
                );
                // Nothing to climb with, and the RFC does not clamp it either.
                prop_assert_eq!(rfc_remove_dot_segments(&normalized), (normalized.to_string(), false));
            }
        }

        #[test]
        fn decoded_parameters_have_no_dot_dot_segment_and_no_nul(
            value in prop_oneof![values(), "\\PC{0,40}", any::<String>()]
        ) {
            if let Ok(decoded) = decode_param(&value) {
                prop_assert!(!decoded.split(['/', '\\']).any(|s| s == ".."), "{value} -> {decoded}");
                prop_assert!(!decoded.contains('\0'), "{value:?} -> {decoded:?}");
                prop_assert_eq!(matches!(decoded, Cow::Borrowed(_)), !value.contains('%'));
            }
        }

        #[test]
        fn encoded_parameters_decode_to_the_original_unless_refused(
            text in prop_oneof!["\\PC{0,20}", "[./\\\\a+ \\x00]{0,8}"]
        ) {
            let refused = text.contains('\0') || text.split(['/', '\\']).any(|s| s == "..");
            let encoded = encode_all(&text);
            match decode_param(&encoded) {
                Ok(decoded) => {
                    prop_assert!(!refused, "{text:?}");
                    prop_assert_eq!(decoded, text);
                }
                Err(error) => {
                    prop_assert!(refused, "{text:?}: {error}");
                }
            }
        }

        #[test]
        fn neither_function_panics(text in prop_oneof![any::<String>(), "\\PC{0,60}", "[/.%2eE\\\\]{0,20}"]) {
            let _ = normalize(&text);
            let _ = normalize(&format!("/{text}"));
            let _ = decode_param(&text);
        }
    }
}
