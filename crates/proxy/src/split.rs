//! Splitting a simple `Query` into its statements, for the statement hook.
//!
//! Uses the real PostgreSQL scanner (pg_query). Fails closed: if the scanner
//! errors, or the pieces it returns do not cover the text (it silently drops
//! tokens it cannot read, and we do not reproduce comment handling between
//! statements), the whole text is handed to the hook as one statement, so
//! nothing reaches the database without the hook having seen it.

/// Statements of `text` with their byte offsets.
pub fn statements(text: &str) -> Vec<(usize, &str)> {
    // Fast path: a separator is a `;`; with none before the last non-blank
    // character there is exactly one statement (the common case on the hot path).
    let trimmed = text.trim_end_matches(|c: char| c.is_whitespace() || c == ';');
    if !trimmed.contains(';') {
        return vec![(0, text)];
    }
    let Ok(parts) = pg_query::split_with_scanner(text) else {
        return vec![(0, text)];
    };
    let base = text.as_ptr() as usize;
    let mut out = Vec::with_capacity(parts.len());
    let mut covered = 0usize;
    for part in parts {
        let offset = part.as_ptr() as usize - base;
        let gap = &text[covered..offset];
        if !gap.chars().all(|c| c.is_whitespace() || c == ';') {
            return vec![(0, text)];
        }
        covered = offset + part.len();
        out.push((offset, part));
    }
    if !text[covered..]
        .chars()
        .all(|c| c.is_whitespace() || c == ';')
        || out.is_empty()
    {
        return vec![(0, text)];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::statements;

    fn texts(q: &str) -> Vec<&str> {
        statements(q).into_iter().map(|(_, s)| s.trim()).collect()
    }

    #[test]
    fn single_statements_take_the_fast_path() {
        assert_eq!(statements("SELECT 1;"), vec![(0, "SELECT 1;")]);
        assert_eq!(statements("SELECT 'a;b'"), vec![(0, "SELECT 'a;b'")]);
    }

    #[test]
    fn splits_on_real_separators_only() {
        assert_eq!(
            texts("SELECT 'x;y'; DELETE FROM t; SELECT $$;$$"),
            vec!["SELECT 'x;y'", "DELETE FROM t", "SELECT $$;$$"]
        );
    }

    #[test]
    fn offsets_point_into_the_text() {
        let q = "SELECT 1; SELECT 2";
        let parts = statements(q);
        assert_eq!(parts.len(), 2);
        for (off, s) in parts {
            assert_eq!(&q[off..off + s.len()], s);
        }
    }

    #[test]
    fn unreadable_text_is_one_statement_never_dropped() {
        // The scanner drops tokens it cannot read; we must not.
        let q = "select 1; asdf; DELETE FROM t";
        let all: String = statements(q).iter().map(|(_, s)| *s).collect();
        assert!(all.contains("asdf") && all.contains("DELETE"), "{all}");
        // Comments between statements make us fall back to the whole text.
        let q = "SELECT 1; /* x */ DELETE FROM t";
        let all: String = statements(q).iter().map(|(_, s)| *s).collect();
        assert!(all.contains("DELETE"), "{all}");
    }
}
