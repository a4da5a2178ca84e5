//! A reader of a BPF ring buffer (`BPF_MAP_TYPE_RINGBUF`), by mmap as the
//! kernel lays it out: one writable page holding the consumer position,
//! then (read-only) one page holding the producer position followed by the
//! data area mapped twice in a row, so that a record that wraps around the
//! end is still contiguous. Each record starts with an 8-byte header: its
//! length with a busy bit (still being written) and a discard bit. Records
//! are 8-byte aligned. The reader owns every mapping and descriptor: all
//! are released when it is dropped.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

const BUSY: u32 = 1 << 31;
const DISCARD: u32 = 1 << 30;
const HEADER: usize = 8;

struct Mapping {
    addr: *mut libc::c_void,
    len: usize,
}

impl Mapping {
    fn new(fd: BorrowedFd<'_>, len: usize, prot: i32, offset: usize) -> io::Result<Mapping> {
        // SAFETY: a fresh shared mapping of the map's fd; the kernel checks
        // offset, length and protection against the ring buffer's layout.
        let addr = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, libc::MAP_SHARED, fd.as_raw_fd(), offset as i64) };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping { addr, len })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `new` mapped, once.
        unsafe { libc::munmap(self.addr, self.len) };
    }
}

pub struct RingReader {
    consumer: Mapping,
    producer: Mapping,
    /// Size of the data area (a power of two).
    size: usize,
    page: usize,
    epoll: OwnedFd,
    _map: OwnedFd,
}

impl RingReader {
    /// Maps the ring buffer `map`, whose data area is `size` bytes (its
    /// `max_entries`).
    pub fn new(map: OwnedFd, size: usize) -> io::Result<RingReader> {
        if !size.is_power_of_two() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "ring buffer size is not a power of two"));
        }
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let consumer = Mapping::new(map.as_fd(), page, libc::PROT_READ | libc::PROT_WRITE, 0)?;
        let producer = Mapping::new(map.as_fd(), page + 2 * size, libc::PROT_READ, page)?;
        // SAFETY: plain epoll_create1; the descriptor is owned below.
        let raw = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor nobody else owns.
        let epoll = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut ev = libc::epoll_event { events: libc::EPOLLIN as u32, u64: 0 };
        // SAFETY: valid descriptors and event.
        if unsafe { libc::epoll_ctl(epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, map.as_raw_fd(), &mut ev) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(RingReader { consumer, producer, size, page, epoll, _map: map })
    }

    fn consumer_pos(&self) -> &AtomicU64 {
        // SAFETY: the consumer page starts with the 8-byte aligned position.
        unsafe { &*(self.consumer.addr as *const AtomicU64) }
    }

    fn producer_pos(&self) -> &AtomicU64 {
        // SAFETY: the producer page starts with the 8-byte aligned position.
        unsafe { &*(self.producer.addr as *const AtomicU64) }
    }

    /// The data area, twice in a row.
    fn data(&self) -> &[u8] {
        // SAFETY: the mapping holds the producer page and then 2 * size bytes.
        unsafe { std::slice::from_raw_parts((self.producer.addr as *const u8).add(self.page), 2 * self.size) }
    }

    /// Skips every record written so far: a live reader starts now.
    pub fn skip_backlog(&self) {
        let prod = self.producer_pos().load(Ordering::Acquire);
        self.consumer_pos().store(prod, Ordering::Release);
    }

    /// Hands every complete record to `f`; returns how many.
    pub fn consume(&self, mut f: impl FnMut(&[u8])) -> usize {
        let mut n = 0;
        let mut cons = self.consumer_pos().load(Ordering::Acquire);
        loop {
            let prod = self.producer_pos().load(Ordering::Acquire);
            if cons >= prod {
                break;
            }
            let off = (cons as usize) & (self.size - 1);
            let data = self.data();
            // SAFETY: off < size and headers are 8-byte aligned within the data area.
            let header = unsafe { &*(data.as_ptr().add(off) as *const AtomicU32) }.load(Ordering::Acquire);
            if header & BUSY != 0 {
                break;
            }
            let len = (header & !(BUSY | DISCARD)) as usize;
            if len > self.size - HEADER {
                // Cannot be: the kernel never writes such a record. Stop reading.
                break;
            }
            if header & DISCARD == 0 {
                f(&data[off + HEADER..off + HEADER + len]);
                n += 1;
            }
            cons += (len + HEADER).next_multiple_of(8) as u64;
            self.consumer_pos().store(cons, Ordering::Release);
        }
        n
    }

    /// Waits up to `timeout_ms` for the kernel to signal new records.
    pub fn wait(&self, timeout_ms: i32) -> io::Result<()> {
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: one event slot, valid epoll descriptor.
        let r = unsafe { libc::epoll_wait(self.epoll.as_raw_fd(), &mut ev, 1, timeout_ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        Ok(())
    }
}
