use super::*;

#[test]
fn copy_up_round_trip() {
    let raw = raw::copy_up(52, "etc/apt/sources.list", 4096, 4096, 1000);
    let Event::CopyUp(c) = Event::try_from(raw.as_slice()).unwrap() else {
        panic!("kind")
    };
    assert_eq!(c.path, "/etc/apt/sources.list");
    assert_eq!(
        c.origin.dev,
        Dev {
            major: 0,
            minor: 52
        }
    );
    assert_eq!(c.origin.comm, "writer");
    assert_eq!(c.origin.tgid, 100);
    assert_eq!(
        c.data,
        Some(DataCopy {
            bytes: 4096,
            ns: 500
        })
    );
    assert_eq!(c.size, 4096);
    assert!(!c.path_truncated);
}

#[test]
fn copy_up_without_data_copy() {
    let raw = raw::copy_up(1, "d", 0, NO_DATA_COPY, 10);
    let Event::CopyUp(c) = Event::try_from(raw.as_slice()).unwrap() else {
        panic!("kind")
    };
    assert_eq!(c.data, None);
    assert_eq!(c.path, "/d");
}

#[test]
fn lookup_round_trip() {
    let raw = raw::lookup(3 << 20 | 9, "libc.so.6", LOOKUP_LOWER, 3, 777);
    let Event::Lookup(l) = Event::try_from(raw.as_slice()).unwrap() else {
        panic!("kind")
    };
    assert_eq!(l.name, "libc.so.6");
    assert_eq!(l.outcome, LookupOutcome::LowerOnly);
    assert_eq!(l.layers, 3);
    assert_eq!(l.origin.dev, Dev { major: 3, minor: 9 });
}

#[test]
fn mount_round_trip() {
    let Event::Mount(m) = Event::try_from(raw::mount(77, 1234).as_slice()).unwrap() else {
        panic!("kind")
    };
    assert_eq!(m.duration_ns, 1234);
    assert_eq!(m.origin.dev.to_kernel(), 77);
    assert_eq!(m.origin.comm, "dockerd");
}

#[test]
fn short_unknown_and_corrupt_records_are_errors() {
    let raw = raw::lookup(1, "x", LOOKUP_UPPER, 1, 1);
    assert!(matches!(
        Event::try_from(&raw[..20]),
        Err(DecodeError::TooShort { .. })
    ));
    assert!(matches!(
        Event::try_from(&[1u8, 2][..]),
        Err(DecodeError::TooShort { .. })
    ));
    let mut bad = raw.clone();
    bad[0] = 99;
    assert_eq!(
        Event::try_from(bad.as_slice()),
        Err(DecodeError::UnknownKind(99))
    );
    let mut bad = raw;
    let at = size_of::<EventHeader>() + 8;
    bad[at] = 42;
    assert_eq!(
        Event::try_from(bad.as_slice()),
        Err(DecodeError::BadOutcome(42))
    );
}

#[test]
fn ndjson_line_is_flat_and_names_the_device() {
    let raw = raw::copy_up(52, "a/b", 3, 3, 9);
    let v = serde_json::to_value(Event::try_from(raw.as_slice()).unwrap()).unwrap();
    assert_eq!(v["type"], "copy_up");
    assert_eq!(v["dev"], "0:52");
    assert_eq!(v["path"], "/a/b");
    assert_eq!(v["data"]["bytes"], 3);
    assert_eq!("0:52".parse::<Dev>().unwrap(), Dev::from_kernel(52));
    assert!("052".parse::<Dev>().is_err());
}

#[test]
fn a_name_that_is_not_utf8_is_carried_exactly() {
    let mut raw = raw::copy_up(52, "a/b", 3, 3, 9);
    // Turn "a" into the byte 0xff (the leaf "b" comes first in the buffer, then "a").
    let at = size_of::<CopyUpEvent>() - PATH_BUF_LEN + 2;
    raw[at] = 0xff;
    let Event::CopyUp(c) = Event::try_from(raw.as_slice()).unwrap() else {
        panic!("kind")
    };
    assert_eq!(c.path, "/\u{fffd}/b");
    assert_eq!(c.path_hex.as_deref(), Some("2fff2f62"));
    let v = serde_json::to_value(Event::CopyUp(c)).unwrap();
    assert_eq!(v["path_hex"], "2fff2f62");
    let ok =
        serde_json::to_value(Event::try_from(raw::copy_up(52, "a/b", 3, 3, 9).as_slice()).unwrap())
            .unwrap();
    assert!(ok.get("path_hex").is_none());
}

#[test]
fn path_components_are_reversed_and_empty_is_root() {
    assert_eq!(path_from_components(b"c\0b\0a\0"), "/a/b/c");
    assert_eq!(path_from_components(b""), "/");
}
