//! Whether the gateway reads a text the way PostgreSQL will.
//!
//! pg_query lexes with PostgreSQL's defaults: `standard_conforming_strings =
//! on` and the text already decoded to UTF-8. PostgreSQL lexes with the
//! session's settings. Two settings change where a literal ends:
//!
//! - `standard_conforming_strings = off` makes a backslash in a plain `'...'`
//!   literal an escape, so `SELECT 'a\''; DELETE ...; --'` is one literal to
//!   the parser and a `SELECT` then a `DELETE` to the server. The gateway never
//!   lets a session turn it off, and ends a session the server reports it off
//!   for (see `proxy::relay`).
//! - `client_encoding`: encodings whose characters can contain the bytes of
//!   `'` or `\` are refused (see `wire::encoding`); among the others, ASCII
//!   bytes mean the same in all.
//!
//! (`backslash_quote` does not move a literal's end: it only makes the server
//! reject `\'`, which the lexer reads as an escaped quote either way.)
//!
//! While a statement that may change those settings is still running (a
//! function the gateway cannot see into may call `set_config`), a statement
//! sent after it is read by the server under settings the gateway does not
//! know yet. [`reads_the_same`] says whether that cannot matter: pure ASCII,
//! and no backslash in a plain string literal.

use pg_query::protobuf::Token;

/// Whether `text` lexes the same under every value of
/// `standard_conforming_strings` and every ASCII-safe client encoding.
/// Unreadable text: no.
pub fn reads_the_same(text: &str) -> bool {
    if !text.is_ascii() {
        return false;
    }
    if !text.contains('\\') {
        return true;
    }
    let Ok(scanned) = pg_query::scan(text) else {
        return false;
    };
    // Tokens cover everything but blanks and comments: a backslash outside
    // them is in a comment, the same either way.
    scanned.tokens.iter().all(|t| {
        if t.token != Token::Sconst as i32 {
            return true;
        }
        let lit = &text[t.start as usize..t.end as usize];
        // E'...' reads backslashes as escapes whatever the setting; B'' and
        // X'' never do; dollar quotes never do. Plain and N'' literals do
        // when the setting is off.
        let plain = lit.starts_with('\'') || lit.starts_with(['n', 'N']);
        !(plain && lit.contains('\\'))
    })
}

/// Whether a value of `standard_conforming_strings` is one the gateway reads
/// as PostgreSQL does (`on` in any spelling PostgreSQL takes for a boolean).
pub fn standard_strings_on(value: &str) -> bool {
    matches!(
        value.trim().to_ascii_lowercase().as_str(),
        "on" | "true" | "yes" | "1" | "t" | "y" | "tr" | "tru" | "ye"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backslashes_in_plain_literals_read_differently() {
        assert!(!reads_the_same(
            r"SELECT 'a\''; DELETE FROM w WHERE id = 1; --'"
        ));
        assert!(!reads_the_same(r"SELECT N'a\'; DELETE FROM w; --'"));
        assert!(!reads_the_same("SELECT 'café'"), "not ASCII");
        assert!(!reads_the_same(r"SELECT 'unterminated\"), "unreadable");
    }

    #[test]
    fn everything_else_reads_the_same() {
        for sql in [
            "SELECT 1",
            r"SELECT E'a\'b'",
            r"SELECT $$a\'b$$",
            r"SELECT 1 -- a\' comment",
            r"SELECT 1 /* a\ */",
            r#"SELECT "we\ird" FROM t"#,
            "SELECT B'0101', X'ff'",
        ] {
            assert!(reads_the_same(sql), "{sql}");
        }
    }

    #[test]
    fn on_in_every_boolean_spelling() {
        for on in ["on", "ON", " true", "yes", "1", "t"] {
            assert!(standard_strings_on(on), "{on}");
        }
        for off in ["off", "false", "no", "0", "of", ""] {
            assert!(!standard_strings_on(off), "{off}");
        }
    }
}
