//! Plain-text tables (cli-table) for the operator commands and the client, the same on a
//! terminal and in a pipe except for the bold titles.

use std::io::IsTerminal;

use cli_table::{Cell, CellStruct, ColorChoice, Style, Table};

/// Renders `rows` under a bold `title`. cli-table colours by default, which would put ANSI
/// escapes into pipes and files (`ferryd log | grep ...`), so colour is used only on a terminal.
///
/// # Errors
/// Only when writing to the in-memory buffer fails.
pub fn render(title: &[&str], rows: Vec<Vec<CellStruct>>) -> std::io::Result<String> {
    let colors = if std::io::stdout().is_terminal() {
        ColorChoice::Auto
    } else {
        ColorChoice::Never
    };
    let shown = rows
        .table()
        .title(title.iter().map(|t| t.cell().bold(true)))
        .color_choice(colors)
        .display()?;
    Ok(shown.to_string())
}
