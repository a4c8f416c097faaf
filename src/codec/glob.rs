//! Wildcard patterns for one file name, as NLST and LIST expand them in their last path
//! component: `*`, `?`, `[abc]`, `[a-z]` and `[!a-z]` (also `[^a-z]`).
//!
//! Pure: no I/O. A pattern matches names, never paths: it has no `/`. Matching is iterative
//! with one resume point, so it costs at most (name length × pattern length) steps, never the
//! exponential backtracking of a recursive matcher.

/// The longest pattern, in bytes: Linux `NAME_MAX`. A longer text names no file either way.
const MAX_PATTERN_LEN: usize = 255;

/// One part of a pattern; each but `Star` matches exactly one character.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Char(char),
    /// `?`
    Any,
    /// `*`: any run of characters, also none.
    Star,
    /// `[...]`: one character in (or, negated, not in) the inclusive ranges.
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

impl Token {
    fn matches(&self, c: char) -> bool {
        match self {
            Token::Char(want) => *want == c,
            Token::Any => true,
            Token::Star => false,
            Token::Class { negated, ranges } => {
                ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated
            }
        }
    }
}

/// A parsed wildcard pattern for the names in one directory.
///
/// As in the shell, a name starting with `.` is matched only by a pattern starting with `.`,
/// so `*` leaves out hidden files (and never yields `.` or `..`). Backslash is an ordinary
/// character (names may hold it); `[*]` matches a literal `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamePattern {
    tokens: Vec<Token>,
}

impl NamePattern {
    /// Parses `text`; `None` if it holds no wildcard (no `*`, no `?`, no `[` closed by `]`),
    /// has a `/`, or is longer than a name can be: then it names one file, literally.
    pub fn parse(text: &str) -> Option<NamePattern> {
        if text.len() > MAX_PATTERN_LEN || text.contains('/') {
            return None;
        }
        let chars: Vec<char> = text.chars().collect();
        let mut tokens = Vec::with_capacity(chars.len());
        let mut wild = false;
        let mut i = 0;
        while let Some(&c) = chars.get(i) {
            i += 1;
            let token = match c {
                // Runs of stars are one star: fewer resume points, same language.
                '*' if tokens.last() == Some(&Token::Star) => continue,
                '*' => Token::Star,
                '?' => Token::Any,
                '[' => match parse_class(&chars, i) {
                    Some((class, next)) => {
                        i = next;
                        class
                    }
                    // An unclosed `[` is itself (fnmatch(3) does the same).
                    None => Token::Char('['),
                },
                c => Token::Char(c),
            };
            wild |= !matches!(token, Token::Char(_));
            tokens.push(token);
        }
        wild.then_some(NamePattern { tokens })
    }

    /// Whether `name` (one directory entry) matches the whole pattern.
    pub fn matches(&self, name: &str) -> bool {
        let name: Vec<char> = name.chars().collect();
        if name.first() == Some(&'.') && self.tokens.first() != Some(&Token::Char('.')) {
            return false;
        }
        let (mut t, mut n) = (0, 0);
        // After a star: the token after it, and where in the name the star's run ends. On a
        // mismatch the star takes one character more and matching resumes from there; an
        // earlier star never needs to take more, so this is the only state kept.
        let mut resume: Option<(usize, usize)> = None;
        while let Some(&c) = name.get(n) {
            match self.tokens.get(t) {
                Some(Token::Star) => {
                    t += 1;
                    resume = Some((t, n));
                    continue;
                }
                Some(token) if token.matches(c) => {
                    t += 1;
                    n += 1;
                    continue;
                }
                _ => {}
            }
            let Some((after_star, end)) = resume else {
                return false;
            };
            resume = Some((after_star, end + 1));
            t = after_star;
            n = end + 1;
        }
        self.tokens
            .iter()
            .skip(t)
            .all(|token| *token == Token::Star)
    }
}

/// Parses the class whose `[` was just before `chars[start]`; returns it and the index after
/// its `]`, or `None` if no `]` closes it.
fn parse_class(chars: &[char], start: usize) -> Option<(Token, usize)> {
    let mut i = start;
    let negated = matches!(chars.get(i), Some('!' | '^'));
    if negated {
        i += 1;
    }
    let mut ranges = Vec::new();
    // A `]` first in the class is a member, not its end.
    let mut first = true;
    loop {
        let c = *chars.get(i)?;
        if c == ']' && !first {
            return Some((Token::Class { negated, ranges }, i + 1));
        }
        first = false;
        match (chars.get(i + 1), chars.get(i + 2)) {
            (Some('-'), Some(&hi)) if hi != ']' => {
                ranges.push((c, hi));
                i += 3;
            }
            _ => {
                ranges.push((c, c));
                i += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, name: &str) -> bool {
        NamePattern::parse(pattern)
            .unwrap_or_else(|| panic!("{pattern:?} is no pattern"))
            .matches(name)
    }

    #[test]
    fn literal_texts_are_no_patterns() {
        for text in [
            "",
            "plain.txt",
            "a]b",
            "[unclosed",
            "back\\slash",
            "a/*",
            &"*".repeat(256),
        ] {
            assert_eq!(NamePattern::parse(text), None, "{text:?}");
        }
        assert!(NamePattern::parse(&"*".repeat(255)).is_some());
    }

    #[test]
    fn table_of_matches() {
        let cases: &[(&str, &str, bool)] = &[
            ("*", "a", true),
            ("*", "", true),
            ("*.dat", "a.dat", true),
            ("*.dat", "a.dat.bak", false),
            ("*.dat", "dat", false),
            ("f*.dat", "f.dat", true),
            ("f*.dat", "foo.dat", true),
            ("f*.dat", "gfoo.dat", false),
            ("*a*b*c", "xxaxxbxxcxxc", true),
            ("*a*b*c", "xxaxxcxxb", false),
            ("?", "a", true),
            ("?", "", false),
            ("?", "ab", false),
            ("??.txt", "ab.txt", true),
            ("?", "é", true),
            ("[abc]", "b", true),
            ("[abc]", "d", false),
            ("[a-c]x", "bx", true),
            ("[a-c]x", "dx", false),
            ("[!a-c]x", "dx", true),
            ("[!a-c]x", "ax", false),
            ("[^a-c]x", "dx", true),
            ("[]]", "]", true),
            ("[!]]", "]", false),
            ("[!]]", "a", true),
            ("[a-]", "-", true),
            ("[-a]", "-", true),
            ("[z-a]", "m", false),
            ("[*]", "*", true),
            ("[*]", "a", false),
            ("*[", "x[", true),
            ("x[?", "x[y", true),
            ("d[0-9][0-9]", "d42", true),
            ("d[0-9][0-9]", "d4x", false),
            ("**x", "ax", true),
        ];
        for &(pattern, name, want) in cases {
            assert_eq!(matches(pattern, name), want, "{pattern:?} vs {name:?}");
        }
    }

    #[test]
    fn hidden_names_need_a_leading_dot() {
        assert!(!matches("*", ".profile"));
        assert!(!matches("?profile", ".profile"));
        assert!(!matches("[.]profile", ".profile"));
        assert!(matches(".*", ".profile"));
        assert!(matches("*", "a.b"));
    }

    /// The obvious recursive matcher (exponential in the worst case): the reference.
    fn reference(tokens: &[Token], name: &[char]) -> bool {
        match tokens.split_first() {
            None => name.is_empty(),
            Some((Token::Star, rest)) => (0..=name.len()).any(|i| reference(rest, &name[i..])),
            Some((token, rest)) => name
                .split_first()
                .is_some_and(|(&c, tail)| token.matches(c) && reference(rest, tail)),
        }
    }

    proptest::proptest! {
        #[test]
        fn matching_agrees_with_the_recursive_reference(
            pattern in "[ab.*?!\\[\\]-]{0,8}",
            name in "[ab.!\\]-]{0,8}",
        ) {
            if let Some(parsed) = NamePattern::parse(&pattern) {
                let chars: Vec<char> = name.chars().collect();
                let hidden = chars.first() == Some(&'.')
                    && parsed.tokens.first() != Some(&Token::Char('.'));
                let want = !hidden && reference(&parsed.tokens, &chars);
                proptest::prop_assert_eq!(parsed.matches(&name), want);
            }
        }
    }

    /// `*a*a*...*b` against "aaaa...a" makes a backtracking matcher take exponential time;
    /// this one does at most name × pattern steps, so the test ends at once.
    #[test]
    fn many_stars_do_not_blow_up() {
        let pattern = format!("{}b", "*a".repeat(100));
        let name = "a".repeat(255);
        assert!(!matches(&pattern, &name));
        assert!(matches(&pattern, &format!("{name}b")));
    }
}
