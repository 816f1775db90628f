//! Syntax errors as PostgreSQL reports them: SQLSTATE 42601, the parser's own
//! message, and the position (1-based, in characters) of the token where
//! parsing failed, so a client gets the same answer as from the server,
//! without the text reaching it.
//!
//! The parser's message names the token (`syntax error at or near "FROM"`)
//! but pg_query does not hand out its offset. The offset is found with the
//! scanner: among the tokens with that text, the failing one is the first
//! whose prefix (up to and including it) already fails other than "at end of
//! input". "At end of input" is reported at the end of the text.

/// A syntax error located in its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// The parser's message, as PostgreSQL words it.
    pub message: String,
    /// 1-based character position in the text.
    pub position: u32,
}

const AT_OR_NEAR: &str = " at or near \"";
const AT_END: &str = " at end of input";

/// Locates the syntax error pg_query reported for `sql` as `message`; `None`
/// if the message does not name a place (not a syntax error as such).
pub fn locate(sql: &str, message: &str) -> Option<SyntaxError> {
    let chars = |byte: usize| sql[..byte].chars().count() as u32 + 1;
    if message.ends_with(AT_END) {
        return Some(SyntaxError {
            message: message.to_string(),
            position: chars(sql.len()),
        });
    }
    let start = message.find(AT_OR_NEAR)? + AT_OR_NEAR.len();
    let token = message[start..].strip_suffix('"')?;
    let fails_here = |end: usize| match pg_query::parse(&sql[..end], 0) {
        Err(pg_query::Error::Parse(m)) => !m.ends_with(AT_END),
        _ => false,
    };
    let position = match pg_query::scan(sql) {
        Ok(scanned) => scanned
            .tokens
            .iter()
            .map(|t| (t.start as usize, t.end as usize))
            .filter(|&(s, e)| sql.get(s..e) == Some(token))
            .find(|&(_, e)| fails_here(e))
            .map(|(s, _)| chars(s)),
        // A lexical error (an unterminated string): the scanner fails too.
        Err(_) => None,
    };
    let position = position.or_else(|| sql.find(token).map(chars))?;
    Some(SyntaxError {
        message: message.to_string(),
        position,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(sql: &str) -> (String, u32) {
        let m = match pg_query::parse(sql, 0) {
            Err(pg_query::Error::Parse(m)) => m,
            other => panic!("{sql}: {other:?}"),
        };
        let e = locate(sql, &m).unwrap();
        (e.message, e.position)
    }

    #[test]
    fn the_failing_token_not_its_first_namesake() {
        assert_eq!(
            at("SELEC 1"),
            ("syntax error at or near \"SELEC\"".into(), 1)
        );
        assert_eq!(at("SELECT 1 FROM FROM t").1, 15);
        assert_eq!(at("SELECT (").1, 9);
        assert_eq!(at("SELECT 'é' FROM FROM").1, 17, "characters, not bytes");
        assert_eq!(
            at("select 'abc").0,
            "unterminated quoted string at or near \"'abc\""
        );
        assert_eq!(at("select 'abc").1, 8);
    }
}
