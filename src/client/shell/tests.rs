//! Tests of the command table and the argument helpers.

use super::*;

#[test]
fn host_and_port_forms() {
    let hp = |t: &str| split_host_port(t).expect("valid");
    assert_eq!(hp("example.org"), ("example.org".into(), 21));
    assert_eq!(hp("127.0.0.1:2121"), ("127.0.0.1".into(), 2121));
    assert_eq!(hp("[::1]:2121"), ("::1".into(), 2121));
    assert_eq!(hp("::1"), ("::1".into(), 21));
    assert!(split_host_port("h:port").is_err());
}

#[test]
fn every_command_has_help_and_is_found_by_alias() {
    for spec in COMMANDS {
        assert!(find_command(spec.name).is_some());
        for alias in spec.aliases {
            assert_eq!(find_command(alias).map(|s| s.name), Some(spec.name));
        }
        assert!(spec.usage.starts_with(spec.name));
    }
    assert!(find_command("nope").is_none());
}

#[test]
fn flags_and_names() {
    assert_eq!(take_flag(&["-c", "a"], "-c"), (true, vec!["a"]));
    assert_eq!(take_flag(&["a"], "-c"), (false, vec!["a"]));
    assert_eq!(base_name("/x/y.txt"), "y.txt");
    assert_eq!(base_name("y.txt"), "y.txt");
}

#[test]
fn options_and_home() {
    assert_eq!(skip_options(&["-l", "-a", "dir"]), ["dir"]);
    assert_eq!(skip_options(&["-la"]), [] as [&str; 0]);
    // A lone `-` is a name, and so is what follows the first name.
    assert_eq!(skip_options(&["-", "-x"]), ["-", "-x"]);
    assert_eq!(skip_options(&["a", "-l"]), ["a", "-l"]);
    // Only `~` and `~/...` are the home; `~user` and `a/~` are names.
    for plain in ["~user", "a/~", "/x"] {
        assert_eq!(expand_home(plain).expect("plain"), PathBuf::from(plain));
    }
}
