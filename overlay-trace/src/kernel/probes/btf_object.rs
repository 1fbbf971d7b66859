//! A kernel module's BTF object, as the kernel holds it: found by walking the kernel's BTF
//! objects (`BPF_BTF_GET_NEXT_ID`, `BPF_BTF_GET_FD_BY_ID`, `BPF_OBJ_GET_INFO_BY_FD`) until one is
//! named after the module. fentry/fexit programs for a module function are loaded against it
//! (`attach_btf_obj_fd`), as libbpf and cilium/ebpf do. The bpf(2) calls go through libc: aya
//! 0.14 keeps its own private.

use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_BTF_GET_FD_BY_ID: libc::c_long = 19;
const BPF_BTF_GET_NEXT_ID: libc::c_long = 23;

/// The start of `union bpf_attr` as the three commands use it (the kernel reads only `size`
/// bytes and requires the rest to be zero).
#[repr(C)]
#[derive(Default)]
struct Attr {
    a: u32,
    b: u32,
    c: u64,
    _rest: [u64; 4],
}

/// `struct bpf_btf_info`.
#[repr(C)]
#[derive(Default)]
struct BtfInfo {
    btf: u64,
    btf_size: u32,
    id: u32,
    name: u64,
    name_len: u32,
    kernel_btf: u32,
}

fn bpf(cmd: libc::c_long, attr: &mut Attr) -> std::io::Result<i64> {
    // SAFETY: `attr` is a valid, zero-padded bpf_attr prefix of the size passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut Attr,
            std::mem::size_of::<Attr>(),
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// The kernel BTF object named `name` (a module's), if the kernel has one.
pub fn find(name: &str) -> Option<OwnedFd> {
    let mut id = 0u32;
    loop {
        let mut attr = Attr {
            a: id,
            ..Default::default()
        };
        bpf(BPF_BTF_GET_NEXT_ID, &mut attr).ok()?;
        id = attr.b;
        let mut attr = Attr {
            a: id,
            ..Default::default()
        };
        let Ok(fd) = bpf(BPF_BTF_GET_FD_BY_ID, &mut attr) else {
            continue;
        };
        // SAFETY: a fresh fd we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let mut buf = [0u8; 64];
        let mut info = BtfInfo {
            name: buf.as_mut_ptr() as u64,
            name_len: buf.len() as u32,
            ..Default::default()
        };
        let mut attr = Attr {
            a: fd.as_raw_fd() as u32,
            b: std::mem::size_of::<BtfInfo>() as u32,
            c: &mut info as *mut BtfInfo as u64,
            ..Default::default()
        };
        if bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr).is_err() || info.kernel_btf == 0 {
            continue;
        }
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        if &buf[..end] == name.as_bytes() {
            return Some(fd);
        }
    }
}
