//! Line editing support for the interactive client: tab completion of command names, local
//! paths (for put, lcd, ...) and remote paths (for get, cd, ..., fetched from the server).

use std::cell::RefCell;
use std::rc::Rc;

use rustyline::completion::{Completer, FilenameCompleter, Pair};
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use rustyline::{Context, Helper};

use crate::client::shell::{ArgKind, COMMANDS, Shell, find_command};
use crate::client::words::quote_word;

/// The rustyline helper: completes against the shared shell's state.
pub struct ShellHelper {
    shell: Rc<RefCell<Shell>>,
    files: FilenameCompleter,
}

impl ShellHelper {
    /// A helper over `shell`.
    pub fn new(shell: Rc<RefCell<Shell>>) -> ShellHelper {
        ShellHelper {
            shell,
            files: FilenameCompleter::new(),
        }
    }
}

/// Where the word under the cursor starts, and whether it is the first word.
fn current_word(line: &str) -> (usize, bool) {
    let start = line.rfind(char::is_whitespace).map_or(0, |i| i + 1);
    let first = line[..start].trim().is_empty();
    (start, first)
}

fn command_candidates(prefix: &str) -> Vec<Pair> {
    COMMANDS
        .iter()
        .flat_map(|c| std::iter::once(c.name).chain(c.aliases.iter().copied()))
        .filter(|name| name.starts_with(prefix))
        .map(|name| Pair {
            display: name.to_owned(),
            replacement: format!("{name} "),
        })
        .collect()
}

impl Completer for ShellHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let before = &line[..pos];
        let (start, first) = current_word(before);
        let word = &before[start..];
        if first {
            return Ok((start, command_candidates(word)));
        }
        let command = before.split_whitespace().next().unwrap_or("");
        let kind = find_command(command).map_or(ArgKind::Nothing, |c| c.args);
        match kind {
            ArgKind::Nothing => Ok((pos, Vec::new())),
            ArgKind::Command => Ok((start, command_candidates(word))),
            ArgKind::Local => self.files.complete(line, pos, ctx),
            ArgKind::Remote => {
                let (dir, prefix) = match word.rsplit_once('/') {
                    Some(("", name)) => ("/".to_owned(), name),
                    Some((dir, name)) => (dir.to_owned(), name),
                    None => (String::new(), word),
                };
                let names = self.shell.borrow_mut().remote_names(&dir);
                let shown_dir = match dir.as_str() {
                    "" => String::new(),
                    "/" => "/".to_owned(),
                    d => format!("{d}/"),
                };
                let pairs = names
                    .into_iter()
                    .filter(|(name, _)| name.starts_with(prefix))
                    .map(|(name, is_dir)| {
                        let full = format!("{shown_dir}{name}");
                        let suffix = if is_dir { "/" } else { " " };
                        Pair {
                            display: format!("{name}{}", if is_dir { "/" } else { "" }),
                            replacement: format!("{}{suffix}", quote_word(&full)),
                        }
                    })
                    .collect();
                Ok((start, pairs))
            }
        }
    }
}

impl Hinter for ShellHelper {
    type Hint = String;
}

impl Highlighter for ShellHelper {}

impl Validator for ShellHelper {}

impl Helper for ShellHelper {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_and_commands() {
        assert_eq!(current_word("ge"), (0, true));
        assert_eq!(current_word("get fi"), (4, false));
        assert_eq!(current_word("get "), (4, false));
        let names: Vec<String> = command_candidates("m")
            .into_iter()
            .map(|p| p.display)
            .collect();
        assert_eq!(names, vec!["mget", "mput", "mirror", "mkdir", "mv"]);
    }
}
