use super::*;
use std::sync::atomic::AtomicBool;

#[test]
fn builtins_parse() {
    for (name, text) in BUILTIN {
        let s = Scenario::parse(text).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        assert_eq!(&s.name, name);
        assert!(!s.steps.is_empty());
    }
}

#[test]
fn bad_scenarios_are_clear() {
    let e = |t: &str| format!("{:#}", Scenario::parse(t).unwrap_err());
    assert!(e("name = 1").contains("bad scenario"));
    assert!(e("name='x'\nlayers=1\nsteps=[]\nbogus=1").contains("unknown field `bogus`"));
    assert!(e("name='x'\nlayers=0\nsteps=[]").contains("layers must be 1 to 64"));
    assert!(
        e("name='x'\nlayers=1\nsteps=[]\n[[files]]\nlayer=3\npath='a'").contains("in layer 3 of 1")
    );
    assert!(e("name='x'\nlayers=1\n[[steps]]\nop='rename'\npath='a'").contains("has no `to`"));
    assert!(
        e("name='x'\nlayers=1\nsteps=[]\n[[files]]\nlayer=0\npath='a{i}'\ncount=2\nsize=18446744073709551615")
            .contains("at most 16 GiB")
    );
    assert!(e("name='x'\nlayers=1\n[[steps]]\nop='explode'\npath='a'").contains("unknown variant"));
    let err = format!("{:#}", Scenario::load("no-such-scenario").unwrap_err());
    assert!(
        err.contains("not a readable file (cannot read no-such-scenario: No such file")
            && err.contains("nor one of container-start"),
        "{err}"
    );
}

#[test]
fn paths_and_options_that_reach_outside_are_refused() {
    let e = |t: &str| {
        let err = Scenario::parse(t).unwrap_err();
        assert!(err.chain().any(|c| c.is::<BadInput>()), "exit 2: {err:#}");
        format!("{err:#}")
    };
    let base = "name='x'\nlayers=1\n";
    assert!(
        e(&format!(
            "{base}[[files]]\nlayer=0\npath='../../etc/x'\n[[steps]]\nop='stat'\npath='a'"
        ))
        .contains("files[0].path \"../../etc/x\"")
    );
    assert!(
        e(&format!("{base}[[steps]]\nop='append'\npath='/etc/passwd'")).contains("steps[0].path")
    );
    assert!(
        e(&format!(
            "{base}[[steps]]\nop='rename'\npath='a'\nto='../b'"
        ))
        .contains("steps[0].to")
    );
    let bad = e(&format!(
        "{base}mount_options='metacopy=on; touch /tmp/pwned'\nsteps=[]"
    ));
    assert!(
        bad.contains("mount_options") && bad.contains("metacopy"),
        "{bad}"
    );
    assert!(
        e(&format!("{base}mount_options='lowerdir=/etc'\nsteps=[]"))
            .contains("\"lowerdir\" is not supported")
    );
    assert!(
        Scenario::parse(&format!(
            "{base}mount_options='metacopy=on,redirect_dir=on'\nsteps=[]"
        ))
        .is_ok()
    );
}

#[test]
fn workload_runs_on_a_plain_directory() {
    // The steps do the same on any directory; the VM test runs them on a real overlay.
    let d = tempfile::tempdir().unwrap();
    let (s, _) = Scenario::load("rename-dirs").unwrap();
    populate(&s, |_| d.path().to_path_buf(), &AtomicBool::new(false)).unwrap();
    run_steps(&s, d.path()).unwrap();
    assert!(d.path().join("opt/moved49/file").exists() && !d.path().join("opt/dir0").exists());
}
