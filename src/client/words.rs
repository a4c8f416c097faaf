//! Splitting what the user typed: commands separated by `;` (for `-c`), and a command into
//! words, with `"..."` / `'...'` quoting and backslash escapes so file names may hold spaces.

/// Why a line could not be split.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unterminated quote")]
pub struct UnterminatedQuote;

/// Splits a line into words. Quotes group, a backslash escapes the next character (outside
/// single quotes).
///
/// # Errors
/// [`UnterminatedQuote`] when a quote is not closed.
pub fn split_words(line: &str) -> Result<Vec<String>, UnterminatedQuote> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"') | None, '\\') => {
                if let Some(next) = chars.next() {
                    word.push(next);
                }
                in_word = true;
            }
            (Some(_), c) => word.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return Err(UnterminatedQuote);
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// Splits `-c` text into commands at `;` outside quotes.
pub fn split_commands(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in text.chars() {
        if escaped {
            current.push(c);
            escaped = false;
            continue;
        }
        match (quote, c) {
            (_, '\\') if quote != Some('\'') => {
                current.push(c);
                escaped = true;
            }
            (Some(q), c) if c == q => {
                current.push(c);
                quote = None;
            }
            (None, '"' | '\'') => {
                current.push(c);
                quote = Some(c);
            }
            (None, ';') => out.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    out.push(current);
    out.into_iter()
        .map(|c| c.trim().to_owned())
        .filter(|c| !c.is_empty())
        .collect()
}

/// Quotes a word for display or completion when it holds spaces or quotes.
pub fn quote_word(word: &str) -> String {
    if word.is_empty() || word.contains(|c: char| c.is_whitespace() || "\"'\\;".contains(c)) {
        format!("\"{}\"", word.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        word.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_with_quotes_and_escapes() {
        assert_eq!(
            split_words(r#"put "my file.txt" 'a b' c\ d e"#).expect("ok"),
            vec!["put", "my file.txt", "a b", "c d", "e"]
        );
        assert_eq!(split_words(r#"x "" y"#).expect("ok"), vec!["x", "", "y"]);
        assert_eq!(split_words("  ").expect("ok"), Vec::<String>::new());
        assert_eq!(split_words("\"open"), Err(UnterminatedQuote));
    }

    #[test]
    fn commands_split_on_semicolons_outside_quotes() {
        assert_eq!(
            split_commands(r#"login alice; put "a;b.txt"; dir ;; "#),
            vec!["login alice", r#"put "a;b.txt""#, "dir"]
        );
    }

    #[test]
    fn quoting_round_trips() {
        for w in ["plain", "with space", "q\"uote", "semi;colon", ""] {
            assert_eq!(split_words(&quote_word(w)).expect("ok"), vec![w.to_owned()]);
        }
    }
}
