//! The few `bpf(2)` commands the common path needs, issued directly.
//!
//! aya is used to load an object (relocations, BTF, map creation); everything
//! a call does afterwards (open pins, read and write maps, create, update and
//! detach TCX links, read object info, test runs) goes through these thin
//! wrappers. Each attr struct mirrors the member of `union bpf_attr` in
//! `<linux/bpf.h>` that its command reads; the kernel zero-fills the rest.
//!
//! The map element commands read and write as many bytes as the *kernel's*
//! map says, whatever buffer they are given, so they are `unsafe`: the safe
//! way in is `kernel::maps`, whose typed handles check both sizes once.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

const BPF_MAP_CREATE: u32 = 0;
const BPF_MAP_LOOKUP_ELEM: u32 = 1;
const BPF_MAP_UPDATE_ELEM: u32 = 2;
const BPF_MAP_DELETE_ELEM: u32 = 3;
const BPF_MAP_GET_NEXT_KEY: u32 = 4;
const BPF_OBJ_PIN: u32 = 6;
const BPF_OBJ_GET: u32 = 7;
const BPF_PROG_TEST_RUN: u32 = 10;
const BPF_PROG_QUERY: u32 = 16;
const BPF_OBJ_GET_INFO_BY_FD: u32 = 15;
const BPF_LINK_CREATE: u32 = 28;
const BPF_LINK_UPDATE: u32 = 29;
const BPF_MAP_LOOKUP_BATCH: u32 = 24;
const BPF_MAP_UPDATE_BATCH: u32 = 26;
const BPF_MAP_DELETE_BATCH: u32 = 27;
const BPF_LINK_GET_FD_BY_ID: u32 = 30;
const BPF_LINK_DETACH: u32 = 34;

/// `enum bpf_attach_type` values of the TCX hooks (Linux 6.6).
pub const BPF_TCX_INGRESS: u32 = 46;
pub const BPF_TCX_EGRESS: u32 = 47;
/// `enum bpf_link_type`.
pub const BPF_LINK_TYPE_TCX: u32 = 11;
/// `BPF_ANY`: create or replace a map element.
const BPF_ANY: u64 = 0;
/// `BPF_NOEXIST`: create a map element only if it does not exist.
const BPF_NOEXIST: u64 = 1;

/// How many CPUs the kernel may ever bring up: a per-CPU map holds one
/// value per possible CPU (`/sys/devices/system/cpu/possible`, "0-3,5").
pub fn possible_cpus() -> io::Result<usize> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/possible")?;
    let bad = || io::Error::new(io::ErrorKind::InvalidData, format!("possible CPUs: '{}'", text.trim()));
    let mut highest = 0usize;
    for part in text.trim().split(',') {
        let last = part.rsplit('-').next().ok_or_else(bad)?;
        highest = highest.max(last.parse::<usize>().map_err(|_| bad())?);
    }
    Ok(highest + 1)
}

fn bpf<T>(cmd: u32, attr: &mut T) -> io::Result<i64> {
    // SAFETY: `attr` is a repr(C) prefix of `union bpf_attr` for `cmd`, valid
    // for its full size; the kernel reads at most that many bytes and writes
    // only fields inside it.
    let ret = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, std::mem::size_of::<T>() as u32) };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn fd_from(ret: i64) -> OwnedFd {
    // SAFETY: a successful fd-returning bpf command hands us a new descriptor we own.
    unsafe { OwnedFd::from_raw_fd(ret as i32) }
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
}

#[repr(C)]
#[derive(Default)]
struct ObjAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
}

/// Opens a pinned object (`BPF_OBJ_GET`).
pub fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    let p = c_path(path)?;
    let mut attr = ObjAttr { pathname: p.as_ptr() as u64, ..Default::default() };
    bpf(BPF_OBJ_GET, &mut attr).map(fd_from)
}

/// Pins an object (`BPF_OBJ_PIN`); fails with `EEXIST` if the path exists.
pub fn obj_pin(fd: BorrowedFd<'_>, path: &Path) -> io::Result<()> {
    let p = c_path(path)?;
    let mut attr = ObjAttr { pathname: p.as_ptr() as u64, bpf_fd: fd.as_raw_fd() as u32, file_flags: 0 };
    bpf(BPF_OBJ_PIN, &mut attr).map(drop)
}

#[repr(C)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

fn obj_info<T: Default>(fd: BorrowedFd<'_>) -> io::Result<T> {
    let mut info = T::default();
    let mut attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: std::mem::size_of::<T>() as u32,
        info: &mut info as *mut T as u64,
    };
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    Ok(info)
}

/// Prefix of `struct bpf_map_info`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MapInfo {
    pub map_type: u32,
    pub id: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub map_flags: u32,
    pub name: [u8; 16],
}

pub fn map_info(fd: BorrowedFd<'_>) -> io::Result<MapInfo> {
    obj_info(fd)
}

/// Prefix of `struct bpf_prog_info`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct ProgInfo {
    pub prog_type: u32,
    pub id: u32,
    pub tag: [u8; 8],
}

pub fn prog_info(fd: BorrowedFd<'_>) -> io::Result<ProgInfo> {
    obj_info(fd)
}

/// `struct bpf_link_info` with the `tcx` member of its union (which starts at
/// offset 16, the union being 8-byte aligned).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct LinkInfo {
    pub link_type: u32,
    pub id: u32,
    pub prog_id: u32,
    _pad: u32,
    /// 0 once the netdev is gone: the link is defunct.
    pub ifindex: u32,
    pub attach_type: u32,
    _union_rest: [u64; 6],
}

pub fn link_info(fd: BorrowedFd<'_>) -> io::Result<LinkInfo> {
    obj_info(fd)
}

#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
    relative_fd: u32,
    _pad: u32,
    expected_revision: u64,
}

/// `BPF_F_BEFORE`, `BPF_F_AFTER` and `BPF_F_ID` of `<linux/bpf.h>` (6.6).
pub const BPF_F_BEFORE: u32 = 1 << 3;
pub const BPF_F_AFTER: u32 = 1 << 4;
pub const BPF_F_ID: u32 = 1 << 5;

/// Where a new TCX link goes in the device's chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcxPosition {
    /// At the end of the chain.
    Append,
    /// Right before the program with this id.
    BeforeProg(u32),
}

/// Creates a TCX link (`BPF_LINK_CREATE`) at `position`. With
/// `expected_revision` (not 0) the kernel refuses with `ESTALE` if the chain
/// changed since it was queried.
pub fn link_create_tcx(
    prog: BorrowedFd<'_>,
    ifindex: u32,
    attach_type: u32,
    position: TcxPosition,
    expected_revision: u64,
) -> io::Result<OwnedFd> {
    let (flags, relative_fd) = match position {
        TcxPosition::Append => (0, 0),
        TcxPosition::BeforeProg(id) => (BPF_F_BEFORE | BPF_F_ID, id),
    };
    let mut attr = LinkCreateAttr {
        prog_fd: prog.as_raw_fd() as u32,
        target_ifindex: ifindex,
        attach_type,
        flags,
        relative_fd,
        _pad: 0,
        expected_revision,
    };
    bpf(BPF_LINK_CREATE, &mut attr).map(fd_from)
}

#[repr(C)]
struct LinkUpdateAttr {
    link_fd: u32,
    new_prog_fd: u32,
    flags: u32,
    old_prog_fd: u32,
}

/// Swaps the program behind a link atomically (`BPF_LINK_UPDATE`): packets see
/// either the old or the new program, never none.
pub fn link_update(link: BorrowedFd<'_>, new_prog: BorrowedFd<'_>) -> io::Result<()> {
    let mut attr = LinkUpdateAttr {
        link_fd: link.as_raw_fd() as u32,
        new_prog_fd: new_prog.as_raw_fd() as u32,
        flags: 0,
        old_prog_fd: 0,
    };
    bpf(BPF_LINK_UPDATE, &mut attr).map(drop)
}

#[repr(C)]
struct LinkDetachAttr {
    link_fd: u32,
}

/// Detaches a link now, even if other references (pins, fds) keep it alive.
pub fn link_detach(link: BorrowedFd<'_>) -> io::Result<()> {
    let mut attr = LinkDetachAttr { link_fd: link.as_raw_fd() as u32 };
    bpf(BPF_LINK_DETACH, &mut attr).map(drop)
}

#[repr(C)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value_or_next_key: u64,
    flags: u64,
}

fn elem_attr(map: BorrowedFd<'_>, key: *const u8, value: u64, flags: u64) -> MapElemAttr {
    MapElemAttr { map_fd: map.as_raw_fd() as u32, _pad: 0, key: key as u64, value_or_next_key: value, flags }
}

fn not_found(e: io::Error) -> io::Result<bool> {
    if e.raw_os_error() == Some(libc::ENOENT) {
        Ok(false)
    } else {
        Err(e)
    }
}

/// Looks `key` up. `false` if absent.
///
/// # Safety
/// `key` and `value` must be at least the map's key and value sizes.
pub unsafe fn map_lookup(map: BorrowedFd<'_>, key: &[u8], value: &mut [u8]) -> io::Result<bool> {
    let mut attr = elem_attr(map, key.as_ptr(), value.as_mut_ptr() as u64, 0);
    bpf(BPF_MAP_LOOKUP_ELEM, &mut attr).map(|_| true).or_else(not_found)
}

/// Creates or replaces `key`.
///
/// # Safety
/// `key` and `value` must be at least the map's key and value sizes.
pub unsafe fn map_update(map: BorrowedFd<'_>, key: &[u8], value: &[u8]) -> io::Result<()> {
    retry_enomem(|| {
        let mut attr = elem_attr(map, key.as_ptr(), value.as_ptr() as u64, BPF_ANY);
        bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map(drop)
    })
}

/// How often an update that found no free element is retried, 1 ms apart.
const ENOMEM_RETRIES: u32 = 200;

/// A map that is not preallocated takes its elements from a per-CPU cache
/// the kernel refills asynchronously, so a burst of creations from user
/// space can find it empty for a moment (ENOMEM). Retried briefly (at most
/// about 200 ms), then the error stands.
fn retry_enomem<T>(mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    let mut attempts = 0;
    loop {
        match f() {
            Err(e) if e.raw_os_error() == Some(libc::ENOMEM) && attempts < ENOMEM_RETRIES => {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            result => return result,
        }
    }
}

/// Creates `key` unless it exists (`BPF_NOEXIST`); `false` if it existed.
///
/// # Safety
/// `key` and `value` must be at least the map's key and value sizes (for a
/// per-CPU map, the value size rounded up to 8 times the possible CPUs).
pub unsafe fn map_create_elem(map: BorrowedFd<'_>, key: &[u8], value: &[u8]) -> io::Result<bool> {
    retry_enomem(|| {
        let mut attr = elem_attr(map, key.as_ptr(), value.as_ptr() as u64, BPF_NOEXIST);
        match bpf(BPF_MAP_UPDATE_ELEM, &mut attr) {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(false),
            Err(e) => Err(e),
        }
    })
}

/// Deletes `key`; `false` if it was not there.
///
/// # Safety
/// `key` must be at least the map's key size.
pub unsafe fn map_delete(map: BorrowedFd<'_>, key: &[u8]) -> io::Result<bool> {
    let mut attr = elem_attr(map, key.as_ptr(), 0, 0);
    bpf(BPF_MAP_DELETE_ELEM, &mut attr).map(|_| true).or_else(not_found)
}

/// Every key of a hash map, each `key_size` bytes, one syscall per key.
///
/// # Safety
/// `key_size` must be the map's key size.
pub unsafe fn map_keys(map: BorrowedFd<'_>, key_size: usize) -> io::Result<Vec<Vec<u8>>> {
    let mut keys = Vec::new();
    let mut prev: Option<Vec<u8>> = None;
    loop {
        let mut next = vec![0u8; key_size];
        let key_ptr = prev.as_ref().map_or(std::ptr::null(), |k| k.as_ptr());
        let mut attr = elem_attr(map, key_ptr, next.as_mut_ptr() as u64, 0);
        match bpf(BPF_MAP_GET_NEXT_KEY, &mut attr) {
            Ok(_) => {
                keys.push(next.clone());
                prev = Some(next);
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(keys),
            Err(e) => return Err(e),
        }
    }
}

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Every entry of a hash map as (key, value), read in batches
/// (`BPF_MAP_LOOKUP_BATCH`): a handful of syscalls for 100k entries, where
/// walking keys one by one costs two per entry.
///
/// # Safety
/// `key_size` and `value_size` must be the map's key and value sizes.
pub unsafe fn map_dump(map: BorrowedFd<'_>, key_size: usize, value_size: usize) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut chunk = 4096usize;
    // The batch position: a bucket index for hash maps, a whole key for the
    // maps the kernel walks generically (LPM trie, arrays). The kernel writes
    // and reads key_size bytes there, so the buffer holds at least a key.
    let token_len = key_size.max(8);
    let mut token = vec![0u8; token_len];
    let mut first = true;
    loop {
        let mut keys = vec![0u8; chunk * key_size];
        let mut values = vec![0u8; chunk * value_size];
        let mut next = vec![0u8; token_len];
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { token.as_ptr() as u64 },
            out_batch: next.as_mut_ptr() as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: chunk as u32,
            map_fd: map.as_raw_fd() as u32,
            ..Default::default()
        };
        let done = match bpf(BPF_MAP_LOOKUP_BATCH, &mut attr) {
            Ok(_) => false,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => true,
            // One hash bucket holds more entries than fit: retry bigger.
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) && chunk < 1 << 20 => {
                chunk *= 2;
                continue;
            }
            Err(e) => return Err(e),
        };
        for i in 0..attr.count as usize {
            out.push((
                keys[i * key_size..(i + 1) * key_size].to_vec(),
                values[i * value_size..(i + 1) * value_size].to_vec(),
            ));
        }
        if done {
            return Ok(out);
        }
        token = next;
        first = false;
    }
}

/// Writes `keys[i] -> values[i]` for all entries (`BPF_MAP_UPDATE_BATCH`).
///
/// # Safety
/// `keys` and `values` must hold `count` keys and values of the map's sizes.
pub unsafe fn map_update_batch(map: BorrowedFd<'_>, keys: &[u8], values: &[u8], count: usize) -> io::Result<()> {
    if count == 0 {
        return Ok(());
    }
    let (key_size, value_size) = (keys.len() / count, values.len() / count);
    // On ENOMEM (see retry_enomem) the kernel reports how many it wrote: go
    // on from there.
    let mut done = 0;
    let mut attempts = 0;
    loop {
        let mut attr = BatchAttr {
            keys: keys[done * key_size..].as_ptr() as u64,
            values: values[done * value_size..].as_ptr() as u64,
            count: (count - done) as u32,
            map_fd: map.as_raw_fd() as u32,
            ..Default::default()
        };
        match bpf(BPF_MAP_UPDATE_BATCH, &mut attr) {
            Ok(_) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ENOMEM) && attempts < ENOMEM_RETRIES => {
                done += (attr.count as usize).min(count - done);
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Deletes all `keys` (`BPF_MAP_DELETE_BATCH`); every key must exist.
///
/// # Safety
/// `keys` must hold `count` keys of the map's key size.
pub unsafe fn map_delete_batch(map: BorrowedFd<'_>, keys: &[u8], count: usize) -> io::Result<()> {
    if count == 0 {
        return Ok(());
    }
    let mut attr =
        BatchAttr { keys: keys.as_ptr() as u64, count: count as u32, map_fd: map.as_raw_fd() as u32, ..Default::default() };
    bpf(BPF_MAP_DELETE_BATCH, &mut attr).map(drop)
}

#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

/// The writable prefix of `struct __sk_buff` that `BPF_PROG_TEST_RUN` takes
/// for tc programs (everything else must be zero).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct SkBuffCtx {
    pub bytes: [u8; 192],
}

impl SkBuffCtx {
    const MARK: usize = 8;
    const IFINDEX: usize = 40;

    pub fn new(ifindex: u32, mark: u32) -> Self {
        let mut c = SkBuffCtx { bytes: [0; 192] };
        c.bytes[Self::MARK..Self::MARK + 4].copy_from_slice(&mark.to_ne_bytes());
        c.bytes[Self::IFINDEX..Self::IFINDEX + 4].copy_from_slice(&ifindex.to_ne_bytes());
        c
    }

    pub fn mark(&self) -> u32 {
        u32::from_ne_bytes(self.bytes[Self::MARK..Self::MARK + 4].try_into().unwrap())
    }
}

#[derive(Debug, Clone)]
pub struct TestRun {
    /// The program's return value, as the tc hook would see it.
    pub retval: i32,
    /// Average nanoseconds per run, as the kernel measured it.
    pub duration_ns: u32,
    pub ctx_out: SkBuffCtx,
    /// The packet as the program left it.
    pub data_out: Vec<u8>,
}

/// Runs a tc program on `packet` with `ctx` (`BPF_PROG_TEST_RUN`), `repeat` times.
pub fn prog_test_run(prog: BorrowedFd<'_>, packet: &[u8], ctx: &SkBuffCtx, repeat: u32) -> io::Result<TestRun> {
    let mut ctx_out = SkBuffCtx { bytes: [0; 192] };
    // Room for what a program may push in front of the packet.
    let mut data_out = vec![0u8; packet.len() + 256];
    let mut attr = TestRunAttr {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in: packet.len() as u32,
        data_in: packet.as_ptr() as u64,
        data_size_out: data_out.len() as u32,
        data_out: data_out.as_mut_ptr() as u64,
        repeat,
        ctx_size_in: std::mem::size_of::<SkBuffCtx>() as u32,
        ctx_size_out: std::mem::size_of::<SkBuffCtx>() as u32,
        ctx_in: ctx.bytes.as_ptr() as u64,
        ctx_out: ctx_out.bytes.as_mut_ptr() as u64,
        ..Default::default()
    };
    bpf(BPF_PROG_TEST_RUN, &mut attr)?;
    data_out.truncate((attr.data_size_out as usize).min(data_out.len()));
    Ok(TestRun { retval: attr.retval as i32, duration_ns: attr.duration, ctx_out, data_out })
}

#[repr(C)]
#[derive(Default)]
struct ProgQueryAttr {
    target_ifindex: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    _pad: u32,
    prog_attach_flags: u64,
    link_ids: u64,
    link_attach_flags: u64,
    revision: u64,
}

/// A TCX hook's chain: program ids in order, their link ids (0 for a
/// non-link attachment), and the chain's revision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TcxChain {
    pub progs: Vec<u32>,
    pub links: Vec<u32>,
    pub revision: u64,
}

/// The ids of the programs attached to a TCX hook of `ifindex`, in order.
pub fn prog_query_tcx(ifindex: u32, attach_type: u32) -> io::Result<Vec<u32>> {
    query_tcx(ifindex, attach_type).map(|c| c.progs)
}

/// The chain of a TCX hook (`BPF_PROG_QUERY`).
pub fn query_tcx(ifindex: u32, attach_type: u32) -> io::Result<TcxChain> {
    let mut progs = vec![0u32; 64];
    let mut links = vec![0u32; 64];
    let mut attr = ProgQueryAttr {
        target_ifindex: ifindex,
        attach_type,
        prog_ids: progs.as_mut_ptr() as u64,
        prog_cnt: progs.len() as u32,
        link_ids: links.as_mut_ptr() as u64,
        ..Default::default()
    };
    bpf(BPF_PROG_QUERY, &mut attr)?;
    progs.truncate(attr.prog_cnt as usize);
    links.truncate(attr.prog_cnt as usize);
    Ok(TcxChain { progs, links, revision: attr.revision })
}

#[repr(C)]
struct GetFdByIdAttr {
    id: u32,
    next_id: u32,
    open_flags: u32,
}

/// Opens a link by its id (`BPF_LINK_GET_FD_BY_ID`).
pub fn link_get_fd_by_id(id: u32) -> io::Result<OwnedFd> {
    let mut attr = GetFdByIdAttr { id, next_id: 0, open_flags: 0 };
    bpf(BPF_LINK_GET_FD_BY_ID, &mut attr).map(fd_from)
}

#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
}

/// `BPF_MAP_TYPE_HASH`.
pub const BPF_MAP_TYPE_HASH: u32 = 1;

/// Creates a map; the library itself creates maps through aya, tests use
/// this to plant maps of the wrong shape.
pub fn map_create(map_type: u32, key_size: u32, value_size: u32, max_entries: u32, map_flags: u32) -> io::Result<OwnedFd> {
    let mut attr = MapCreateAttr { map_type, key_size, value_size, max_entries, map_flags };
    bpf(BPF_MAP_CREATE, &mut attr).map(fd_from)
}

/// `BPF_FS_MAGIC` from `<linux/magic.h>`.
const BPF_FS_MAGIC: i64 = 0xcafe4a11;

/// Whether `path` lies on a bpffs (pins anywhere else fail, or vanish with a tmpfs).
pub fn is_bpffs(path: &Path) -> io::Result<bool> {
    let p = c_path(path)?;
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and out-pointer.
    if unsafe { libc::statfs(p.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.f_type as i64 == BPF_FS_MAGIC)
}

/// The kernel's id for a program fd (stable across re-opens of its pin).
pub fn prog_id(fd: impl AsFd) -> io::Result<u32> {
    prog_info(fd.as_fd()).map(|i| i.id)
}
