//! `VPath::resolve` on arbitrary cwd and argument: no panic, the result is absolute and
//! normalised (no empty, "." or ".." components, no trailing slash) and stays inside the home.
#![no_main]

use ferry::storage::vpath::{PathError, VPath};
use libfuzzer_sys::fuzz_target;

fn check(path: &VPath) {
    let s = path.as_str();
    assert!(s.starts_with('/'), "absolute: {s:?}");
    assert!(s.len() <= 4096, "bounded: {}", s.len());
    assert!(!s.contains(['\0', '\r', '\n']), "no control chars: {s:?}");
    if s != "/" {
        assert!(!s.ends_with('/'), "no trailing slash: {s:?}");
        for part in s[1..].split('/') {
            assert!(!part.is_empty(), "no empty component: {s:?}");
            assert!(part != "." && part != "..", "no dot component: {s:?}");
        }
    }
    // Normalised: resolving it again, from anywhere, changes nothing.
    assert_eq!(VPath::root().resolve(s).as_ref(), Ok(path));
    assert_eq!(path.resolve("").as_ref(), Ok(path));
    assert_eq!(path.resolve(".").as_ref(), Ok(path));
}

fuzz_target!(|input: (String, String)| {
    let (cwd, arg) = input;
    let Ok(cwd) = VPath::root().resolve(&cwd) else {
        return;
    };
    check(&cwd);
    match cwd.resolve(&arg) {
        Ok(path) => {
            check(&path);
            // A relative argument without ".." stays below the cwd.
            if !arg.starts_with('/') && !arg.split('/').any(|p| p == "..") {
                let below = path.as_str() == cwd.as_str()
                    || cwd.is_root()
                    || path.as_str().starts_with(&format!("{}/", cwd.as_str()));
                assert!(below, "{arg:?} from {cwd:?} left it: {path:?}");
            }
            // ".." climbs exactly one level, never above the root.
            let up = path.resolve("..").expect("shorter path resolves");
            assert_eq!(Some(up), path.parent().or(Some(VPath::root())));
        }
        Err(PathError::InvalidName) => assert!(arg.contains(['\0', '\r', '\n'])),
        Err(PathError::TooLong) => {}
    }
});
