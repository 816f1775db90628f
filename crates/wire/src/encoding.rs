//! Client encodings: which ones the gateway can lex exactly as the server
//! does, and how their text is shown to the parser.
//!
//! PostgreSQL reads a statement in the session's `client_encoding`. In every
//! encoding it supports except a few East Asian ones, the bytes of a
//! multibyte character are all ≥ 0x80, so no quote, backslash or semicolon can
//! hide inside one: the text's SQL structure is in its ASCII bytes. For those
//! encodings (UTF8, SQL_ASCII, the LATINn, ISO_8859_n, WIN125x/866/874, KOI8,
//! the EUC family, MULE_INTERNAL) a text is shown to the parser with each
//! non-ASCII byte as one character (U+0080..U+00FF): the structure is kept
//! exactly, each character stands for one byte (so offsets map back), and the
//! parser treats those characters as identifier letters, as the server does
//! with the bytes. Only UTF8 texts are decoded as what they are.
//!
//! SJIS, BIG5, GBK, UHC, GB18030, JOHAB (and their aliases) can carry `'` or
//! `\` bytes inside a character: no parser outside the server can lex them
//! safely, so they are refused.

use crate::backend::ErrorFields;
use std::borrow::Cow;

/// How the gateway reads a session's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientEncoding {
    Utf8,
    /// Multibyte characters (if any) never contain ASCII bytes.
    AsciiSafe,
    /// A character may contain an ASCII byte: refused.
    Unsafe,
}

/// PostgreSQL's own normalisation of an encoding name: alphanumerics only,
/// lower case (`"ISO-8859-15"` → `"iso885915"`).
fn normalize(name: &str) -> String {
    name.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// Names (normalised) of the encodings whose characters may contain ASCII
/// bytes, with PostgreSQL's aliases for them.
const UNSAFE: &[&str] = &[
    "sjis",
    "shiftjis",
    "mskanji",
    "shiftjis2004",
    "win932",
    "windows932",
    "big5",
    "win950",
    "windows950",
    "gbk",
    "cp936",
    "win936",
    "windows936",
    "uhc",
    "cp949",
    "win949",
    "windows949",
    "gb18030",
    "johab",
];

impl ClientEncoding {
    /// The class of a `client_encoding` value, as the server reports it or as
    /// a client names it.
    pub fn of(name: &str) -> ClientEncoding {
        let n = normalize(name);
        if n == "utf8" || n == "unicode" {
            ClientEncoding::Utf8
        } else if UNSAFE.contains(&n.as_str()) {
            ClientEncoding::Unsafe
        } else {
            ClientEncoding::AsciiSafe
        }
    }

    /// The text of a statement, for the parser. `None`: not valid in this
    /// encoding as far as the gateway can tell (UTF8), or an unsafe encoding.
    pub fn decode(self, bytes: &[u8]) -> Option<Cow<'_, str>> {
        match self {
            ClientEncoding::Utf8 => std::str::from_utf8(bytes).ok().map(Cow::Borrowed),
            ClientEncoding::AsciiSafe => Some(match std::str::from_utf8(bytes) {
                // Pure ASCII (the common case) needs no copy.
                Ok(s) if s.is_ascii() => Cow::Borrowed(s),
                _ => Cow::Owned(bytes.iter().map(|&b| b as char).collect()),
            }),
            ClientEncoding::Unsafe => None,
        }
    }

    /// The error for `bytes` [`Self::decode`] could not read: PostgreSQL's
    /// own for invalid UTF8, a clear refusal for an encoding no parser outside
    /// the server can lex.
    pub fn unreadable(self, bytes: &[u8]) -> ErrorFields {
        if self == ClientEncoding::Unsafe {
            return ErrorFields::error(
                "0A000",
                "jitgate cannot read statements in this session's client_encoding: its \
                 characters may contain quote or backslash bytes, which no parser outside the \
                 server can lex safely",
            )
            .with_hint(
                "use UTF8, or a single-byte or EUC encoding (SET client_encoding = 'UTF8')",
            );
        }
        let at = std::str::from_utf8(bytes)
            .err()
            .map_or(0, |e| e.valid_up_to());
        let shown: Vec<String> = bytes[at..]
            .iter()
            .take(2)
            .map(|b| format!("0x{b:02x}"))
            .collect();
        ErrorFields::error(
            "22021",
            format!(
                "invalid byte sequence for encoding \"UTF8\": {}",
                shown.join(" ")
            ),
        )
    }

    /// The bytes of `text` (from [`Self::decode`]) in this encoding.
    pub fn encode(self, text: &str) -> Cow<'_, [u8]> {
        match self {
            ClientEncoding::AsciiSafe if !text.is_ascii() => {
                Cow::Owned(text.chars().map(|c| c as u32 as u8).collect())
            }
            _ => Cow::Borrowed(text.as_bytes()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_and_round_trips() {
        assert_eq!(ClientEncoding::of("UTF8"), ClientEncoding::Utf8);
        assert_eq!(ClientEncoding::of("LATIN9"), ClientEncoding::AsciiSafe);
        assert_eq!(ClientEncoding::of("iso-8859-15"), ClientEncoding::AsciiSafe);
        assert_eq!(ClientEncoding::of("EUC_JP"), ClientEncoding::AsciiSafe);
        for bad in [
            "SJIS",
            "Shift_JIS",
            "big5",
            "GBK",
            "cp949",
            "GB18030",
            "JOHAB",
        ] {
            assert_eq!(ClientEncoding::of(bad), ClientEncoding::Unsafe, "{bad}");
        }
        let latin9 = b"SELECT '\xe9t\xe9'; SELECT 2";
        let enc = ClientEncoding::AsciiSafe;
        let text = enc.decode(latin9).unwrap();
        assert_eq!(text.chars().count(), latin9.len(), "a character per byte");
        assert_eq!(&*enc.encode(&text), &latin9[..]);
        assert!(ClientEncoding::Utf8.decode(latin9).is_none());
        assert!(ClientEncoding::Unsafe.decode(b"SELECT 1").is_none());
        assert!(matches!(enc.decode(b"SELECT 1"), Some(Cow::Borrowed(_))));
        let e = ClientEncoding::Utf8.unreadable(b"SELECT '\xe9'");
        assert_eq!(e.code, "22021");
        assert!(e.message.ends_with("0xe9 0x27"), "{}", e.message);
        assert_eq!(ClientEncoding::Unsafe.unreadable(b"x").code, "0A000");
    }
}
