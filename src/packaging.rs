//! Shell completions and man pages of the two binaries, generated from their clap commands:
//! what `scripts/gen-contrib` writes into `contrib/completions/` and `contrib/man/`.
//!
//! The flags that ask for them (`--generate-completions SHELL`, `--generate-man DIR`) are
//! hidden and joined to a binary's command only to parse its command line, never to the command
//! the files are generated from: clap_complete offers hidden flags and subcommands too, so
//! keeping them out of that command is what keeps them out of the completions. Flags rather
//! than a subcommand, because `ferry`'s first argument is a host name, and `ferry generate`
//! must still open the host `generate`.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use clap::{Arg, CommandFactory, FromArgMatches, value_parser};
use clap_complete::Shell;

/// What the hidden flags asked for.
#[derive(Debug, Clone, Default)]
pub struct GenerateFlags {
    /// `--generate-completions SHELL`: print the completion script for SHELL.
    pub completions: Option<Shell>,
    /// `--generate-man DIR`: write the man pages into DIR.
    pub man: Option<PathBuf>,
}

/// The id and long name of the flag that prints the completions.
const COMPLETIONS: &str = "generate-completions";
/// The id and long name of the flag that writes the man pages.
const MAN: &str = "generate-man";

/// What a binary's command line asks for.
pub enum Invocation<Cli> {
    /// Its usual work, with these arguments.
    Run(Cli),
    /// Its completions or man pages.
    Generate(GenerateFlags),
}

/// Parses the process's arguments as `Cli` plus the hidden flags; on bad arguments
/// (or `--help`, `--version`) prints clap's message and exits, as `Parser::parse` does.
pub fn parse<Cli: CommandFactory + FromArgMatches>() -> Invocation<Cli> {
    // Built by hand, not derived: a derived `Args` struct would also set the command's about.
    let command = Cli::command()
        .arg(
            Arg::new(COMPLETIONS)
                .long(COMPLETIONS)
                .value_name("SHELL")
                .value_parser(value_parser!(Shell))
                .help("Print the completion script for SHELL on standard output")
                .hide(true),
        )
        .arg(
            Arg::new(MAN)
                .long(MAN)
                .value_name("DIR")
                .value_parser(value_parser!(PathBuf))
                .help("Write the man pages (NAME.1 and one per subcommand) into DIR")
                .hide(true),
        );
    let matches = command.get_matches();
    let generate = GenerateFlags {
        completions: matches.get_one::<Shell>(COMPLETIONS).copied(),
        man: matches.get_one::<PathBuf>(MAN).cloned(),
    };
    if generate.completions.is_some() || generate.man.is_some() {
        return Invocation::Generate(generate);
    }
    // The derived parser reads only its own arguments from the matches.
    match Cli::from_arg_matches(&matches) {
        Ok(cli) => Invocation::Run(cli),
        Err(e) => e.format(&mut Cli::command()).exit(),
    }
}

impl GenerateFlags {
    /// Prints the completions and/or writes the man pages of `Cli`'s command.
    ///
    /// # Errors
    /// Standard output or a man page cannot be written.
    pub fn run<Cli: CommandFactory>(&self) -> io::Result<()> {
        if let Some(shell) = self.completions {
            completions::<Cli>(shell, &mut io::stdout().lock())?;
        }
        if let Some(dir) = &self.man {
            man_pages::<Cli>(dir)?;
        }
        Ok(())
    }
}

/// Writes `Cli`'s completion script for `shell` to `out`.
///
/// # Errors
/// `out` cannot be written.
fn completions<Cli: CommandFactory>(shell: Shell, out: &mut dyn Write) -> io::Result<()> {
    let mut command = Cli::command();
    let name = command.get_name().to_owned();
    // clap_complete writes with `write_all(..).expect(..)`, which would panic on a closed pipe:
    // render into memory, then write with an error to report.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, name, &mut script);
    out.write_all(&script)?;
    out.flush()
}

/// Writes `Cli`'s man pages into `dir` (created if missing): `NAME.1`, and `NAME-SUB.1` for
/// each visible subcommand, nested ones included.
///
/// # Errors
/// `dir` or a page cannot be written.
fn man_pages<Cli: CommandFactory>(dir: &Path) -> io::Result<()> {
    let mut command = Cli::command();
    // The help's first line names the program ("ferryd: a multi-user ..."); NAME does already.
    let prefix = format!("{}: ", command.get_name());
    let about = command.get_about().map(ToString::to_string);
    if let Some(rest) = about.as_deref().and_then(|a| a.strip_prefix(&prefix)) {
        command = command.about(rest.to_owned());
    }
    std::fs::create_dir_all(dir)
        .and_then(|()| clap_mangen::generate_to(command, dir))
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display())))
}
