//! The command table: every command `ferry>` understands, its aliases, arguments and help
//! ([`COMMANDS`], [`find_command`]), which help and tab completion read.

/// What a command's arguments are, for help and tab completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgKind {
    /// No argument worth completing.
    Nothing,
    /// Remote paths.
    Remote,
    /// Local paths.
    Local,
    /// Command names.
    Command,
}

/// One client command.
#[derive(Debug)]
pub struct CommandSpec {
    /// Its name.
    pub name: &'static str,
    /// Other names for it.
    pub aliases: &'static [&'static str],
    /// Syntax line.
    pub usage: &'static str,
    /// One-line description.
    pub help: &'static str,
    /// What its arguments complete to.
    pub args: ArgKind,
}

const fn spec(
    name: &'static str,
    aliases: &'static [&'static str],
    usage: &'static str,
    help: &'static str,
    args: ArgKind,
) -> CommandSpec {
    CommandSpec {
        name,
        aliases,
        usage,
        help,
        args,
    }
}

/// Every command, in the order `help` lists them.
pub const COMMANDS: &[CommandSpec] = &[
    spec(
        "open",
        &[],
        "open HOST [PORT] | open URL | open BOOKMARK",
        "connect to an FTP server (port 21 by default), an ftp://USER@HOST/DIR URL or a bookmark",
        ArgKind::Nothing,
    ),
    spec(
        "bookmark",
        &[],
        "bookmark add NAME [URL] | bookmark list | bookmark del NAME",
        "keep a URL (this connection's user, host and directory by default; never a password) under a name for open",
        ArgKind::Nothing,
    ),
    spec(
        "close",
        &[],
        "close",
        "disconnect from the server",
        ArgKind::Nothing,
    ),
    spec(
        "register",
        &[],
        "register [NAME]",
        "create an account (SITE REGISTER) and log in as it",
        ArgKind::Nothing,
    ),
    spec(
        "login",
        &["user"],
        "login [USER]",
        "log in; the password is asked without echo",
        ArgKind::Nothing,
    ),
    spec(
        "whoami",
        &[],
        "whoami",
        "show who and where you are logged in",
        ArgKind::Nothing,
    ),
    spec(
        "dir",
        &["ls"],
        "dir [--json] [-OPTIONS] [PATH]",
        "list a remote directory, or one file, as a table or with --json as one JSON array (ls options are ignored)",
        ArgKind::Remote,
    ),
    spec(
        "cd",
        &[],
        "cd PATH",
        "change the remote directory",
        ArgKind::Remote,
    ),
    spec(
        "pwd",
        &[],
        "pwd",
        "show the remote directory",
        ArgKind::Nothing,
    ),
    spec(
        "lcd",
        &[],
        "lcd [DIR]",
        "change the local directory (downloads go there; ~ is your home)",
        ArgKind::Local,
    ),
    spec(
        "lpwd",
        &[],
        "lpwd",
        "show the local directory",
        ArgKind::Nothing,
    ),
    spec(
        "lls",
        &[],
        "lls [DIR]",
        "list a local directory as a table",
        ArgKind::Local,
    ),
    spec(
        "get",
        &[],
        "get [-c] [--verify] REMOTE [LOCAL]",
        "download a file; -c resumes a partial download, --verify compares digests with the server's",
        ArgKind::Remote,
    ),
    spec(
        "pget",
        &[],
        "pget [-n N] REMOTE [LOCAL]",
        "download one file in N segments over N connections at once (4 by default); run again to resume",
        ArgKind::Remote,
    ),
    spec(
        "put",
        &[],
        "put [-c] [--verify] LOCAL [REMOTE]",
        "upload a file; -c resumes a partial upload, --verify compares digests with the server's",
        ArgKind::Local,
    ),
    spec(
        "mget",
        &[],
        "mget [-P N] [--verify] PATTERN...",
        "download the remote files matching the patterns (* ? [..]), N at once over their own logins",
        ArgKind::Remote,
    ),
    spec(
        "mput",
        &[],
        "mput [-P N] [--verify] PATTERN...",
        "upload the local files matching the patterns (* ? [..]), N at once over their own logins",
        ArgKind::Local,
    ),
    spec(
        "mirror",
        &[],
        "mirror [-R] [--delete] [--dry-run] [--verify] [-P N] [--exclude GLOB]... SOURCE [TARGET]",
        "copy a remote tree here (a local one there with -R), only what is new or changed, resuming partial files and keeping times; --delete removes what the source lacks, --dry-run only shows the plan",
        ArgKind::Remote,
    ),
    spec(
        "mkdir",
        &[],
        "mkdir DIR",
        "create a remote directory",
        ArgKind::Remote,
    ),
    spec(
        "rmdir",
        &[],
        "rmdir DIR",
        "remove an empty remote directory",
        ArgKind::Remote,
    ),
    spec(
        "rm",
        &["delete"],
        "rm FILE",
        "delete a remote file",
        ArgKind::Remote,
    ),
    spec(
        "rename",
        &["mv"],
        "rename FROM TO",
        "rename or move a remote file or directory",
        ArgKind::Remote,
    ),
    spec(
        "size",
        &[],
        "size FILE",
        "show a remote file's size in bytes",
        ArgKind::Remote,
    ),
    spec(
        "stat",
        &[],
        "stat [PATH]",
        "show server status, or a path's status",
        ArgKind::Remote,
    ),
    spec(
        "passwd",
        &[],
        "passwd",
        "change your password (SITE PASSWD)",
        ArgKind::Nothing,
    ),
    spec(
        "quote",
        &[],
        "quote LINE",
        "send a raw command line and show the reply",
        ArgKind::Nothing,
    ),
    spec(
        "help",
        &["?"],
        "help [COMMAND]",
        "list commands, or explain one",
        ArgKind::Command,
    ),
    spec(
        "exit",
        &["quit", "bye"],
        "exit",
        "disconnect and leave",
        ArgKind::Nothing,
    ),
];

/// Finds a command by name or alias.
pub fn find_command(name: &str) -> Option<&'static CommandSpec> {
    COMMANDS
        .iter()
        .find(|c| c.name == name || c.aliases.contains(&name))
}

pub(super) fn print_help() {
    println!("Commands (help COMMAND for more):");
    for spec in COMMANDS {
        let aliases = if spec.aliases.is_empty() {
            String::new()
        } else {
            format!(" (also {})", spec.aliases.join(", "))
        };
        println!("  {:<26} {}{aliases}", spec.usage, spec.help);
    }
}
