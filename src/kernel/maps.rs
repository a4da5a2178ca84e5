//! Typed, size-checked BPF maps.
//!
//! Every key and value is a `#[repr(C)]` Rust type declared with
//! [`shared_struct!`], mirroring a struct of a shared BPF header
//! (`bpf/include/`). A map is named by a [`MapDef`] and opened as a
//! [`TypedMap`], whose key and value sizes are checked once, against the
//! kernel's map, where it is opened: past that check no method can make the
//! kernel read or write beyond the Rust value it was given. The raw commands
//! in `kernel::sys` stay `unsafe`.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::os::fd::BorrowedFd;

use anyhow::{bail, Context, Result};

use crate::kernel::state::Loaded;
use crate::kernel::sys::{self, MapInfo};

/// Plain old data: every byte is a field byte (no padding), every bit
/// pattern is a valid value, and the layout is C's.
///
/// # Safety
/// Implement only for integers, arrays of `Pod`, and `#[repr(C)]` structs of
/// `Pod` fields without padding: [`shared_struct!`] checks all of that.
pub unsafe trait Pod: Copy + 'static {}

// SAFETY: integers have no padding and no invalid bit patterns.
unsafe impl Pod for u8 {}
unsafe impl Pod for u16 {}
unsafe impl Pod for u32 {}
unsafe impl Pod for u64 {}
// SAFETY: an array of Pod has no padding between elements.
unsafe impl<T: Pod, const N: usize> Pod for [T; N] {}

/// For [`shared_struct!`]: a compile-time proof that a field type is `Pod`.
pub const fn assert_pod<T: Pod>() {}

/// One field of a shared struct, for the layout tests against BTF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    pub name: &'static str,
    pub offset: usize,
    pub size: usize,
}

/// A `Pod` type that mirrors a named struct of a BPF header.
pub trait Shared: Pod + Ord + std::fmt::Debug {
    /// The C struct's name, as the object's BTF names it.
    const C_NAME: &'static str;
    const FIELDS: &'static [Field];
}

/// Plain integers: an array's key must be one (the kernel checks that an
/// array's BTF key is an integer), and a counter needs no struct.
impl Shared for u32 {
    const C_NAME: &'static str = "__u32";
    const FIELDS: &'static [Field] = &[];
}

impl Shared for u64 {
    const C_NAME: &'static str = "__u64";
    const FIELDS: &'static [Field] = &[];
}

/// Declares a `#[repr(C)]` struct that mirrors a C struct of a BPF header,
/// and proves at compile time that it has no padding and only `Pod` fields.
#[macro_export]
macro_rules! shared_struct {
    ($(#[$meta:meta])* pub struct $name:ident = $c_name:literal {
        $($(#[$fmeta:meta])* pub $field:ident: $ty:ty),* $(,)?
    }) => {
        $(#[$meta])*
        #[repr(C)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name {
            $($(#[$fmeta])* pub $field: $ty),*
        }
        impl Default for $name {
            /// All zero (arrays of any length included).
            fn default() -> Self {
                // SAFETY: Pod (checked below): all-zero bytes are a valid value.
                unsafe { ::std::mem::zeroed() }
            }
        }
        // No padding: the size is the sum of the fields' sizes.
        const _: () = assert!(::std::mem::size_of::<$name>() == 0 $(+ ::std::mem::size_of::<$ty>())*);
        const _: () = { $($crate::kernel::maps::assert_pod::<$ty>();)* };
        // SAFETY: repr(C), every field is Pod, and no padding (checked above).
        unsafe impl $crate::kernel::maps::Pod for $name {}
        impl $crate::kernel::maps::Shared for $name {
            const C_NAME: &'static str = $c_name;
            const FIELDS: &'static [$crate::kernel::maps::Field] = &[$($crate::kernel::maps::Field {
                name: stringify!($field),
                offset: ::std::mem::offset_of!($name, $field),
                size: ::std::mem::size_of::<$ty>(),
            }),*];
        }
    };
}

/// The bytes of a `Pod` value.
fn bytes_of<T: Pod>(v: &T) -> &[u8] {
    // SAFETY: Pod has no padding, so every byte is initialised.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>()) }
}

fn bytes_of_mut<T: Pod>(v: &mut T) -> &mut [u8] {
    // SAFETY: as above, and any bytes written form a valid T (Pod).
    unsafe { std::slice::from_raw_parts_mut((v as *mut T).cast::<u8>(), std::mem::size_of::<T>()) }
}

fn zeroed<T: Pod>() -> T {
    // SAFETY: all-zero bytes are a valid Pod value.
    unsafe { std::mem::zeroed() }
}

fn from_bytes<T: Pod>(b: &[u8]) -> T {
    assert_eq!(b.len(), std::mem::size_of::<T>());
    // SAFETY: exactly size_of::<T>() bytes, any bit pattern valid; unaligned read.
    unsafe { std::ptr::read_unaligned(b.as_ptr().cast::<T>()) }
}

/// The layout of a map's key or value, for the layout tests and messages.
#[derive(Debug, Clone, Copy)]
pub struct TypeLayout {
    pub c_name: &'static str,
    pub size: usize,
    pub fields: &'static [Field],
}

impl TypeLayout {
    pub fn of<T: Shared>() -> TypeLayout {
        TypeLayout { c_name: T::C_NAME, size: std::mem::size_of::<T>(), fields: T::FIELDS }
    }
}

/// A map's name with its Rust key and value types.
pub struct MapDef<K, V> {
    pub name: &'static str,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<K, V> MapDef<K, V> {
    pub const fn new(name: &'static str) -> MapDef<K, V> {
        MapDef { name, _types: PhantomData }
    }
}

/// What the layout tests and the lifecycle code need of any map, untyped.
pub trait MapDesc: Sync {
    fn name(&self) -> &'static str;
    fn key(&self) -> TypeLayout;
    fn value(&self) -> TypeLayout;
    /// Whether the map has BTF key and value types (a ring buffer has none).
    fn typed(&self) -> bool {
        true
    }
}

/// A ring buffer: pinned and reused like any map, read by mmap (see
/// `kernel::ringbuf`), records typed by their reader.
pub struct RingDef {
    pub name: &'static str,
}

impl MapDesc for RingDef {
    fn name(&self) -> &'static str {
        self.name
    }
    fn key(&self) -> TypeLayout {
        TypeLayout { c_name: "", size: 0, fields: &[] }
    }
    fn value(&self) -> TypeLayout {
        TypeLayout { c_name: "", size: 0, fields: &[] }
    }
    fn typed(&self) -> bool {
        false
    }
}

impl<K: Shared, V: Shared> MapDesc for MapDef<K, V> {
    fn name(&self) -> &'static str {
        self.name
    }
    fn key(&self) -> TypeLayout {
        TypeLayout::of::<K>()
    }
    fn value(&self) -> TypeLayout {
        TypeLayout::of::<V>()
    }
}

impl<K: Shared, V: Shared> MapDef<K, V> {
    /// Checks the Rust types against the kernel's map and returns a typed
    /// handle: the only way to the safe map functions.
    pub fn open<'a>(&self, fd: BorrowedFd<'a>, info: &MapInfo) -> Result<TypedMap<'a, K, V>> {
        let (key, value) = (std::mem::size_of::<K>(), std::mem::size_of::<V>());
        if info.key_size as usize != key {
            bail!(
                "map '{}': key size {} in the kernel, {key} in the Rust type {} (struct {})",
                self.name,
                info.key_size,
                std::any::type_name::<K>(),
                K::C_NAME
            );
        }
        if info.value_size as usize != value {
            bail!(
                "map '{}': value size {} in the kernel, {value} in the Rust type {} (struct {})",
                self.name,
                info.value_size,
                std::any::type_name::<V>(),
                V::C_NAME
            );
        }
        let per_cpu = matches!(info.map_type, MAP_PERCPU_HASH | MAP_PERCPU_ARRAY | MAP_LRU_PERCPU_HASH);
        Ok(TypedMap { fd, name: self.name, per_cpu, _types: PhantomData })
    }

    /// Opens a map from its descriptor alone (one `BPF_OBJ_GET_INFO_BY_FD`).
    pub fn open_fd<'a>(&self, fd: BorrowedFd<'a>) -> Result<TypedMap<'a, K, V>> {
        let info = sys::map_info(fd).with_context(|| format!("map '{}': info", self.name))?;
        self.open(fd, &info)
    }
}

const MAP_PERCPU_HASH: u32 = 5;
const MAP_PERCPU_ARRAY: u32 = 6;
const MAP_LRU_PERCPU_HASH: u32 = 10;

/// A map whose key and value sizes equal `K`'s and `V`'s. A per-CPU map
/// reads and writes one value per possible CPU: only the `_per_cpu`
/// methods and key walks work on it, the others refuse it (their buffers
/// hold one value).
pub struct TypedMap<'a, K, V> {
    fd: BorrowedFd<'a>,
    name: &'static str,
    per_cpu: bool,
    _types: PhantomData<fn() -> (K, V)>,
}

/// Up to this many entries are checked one by one (the tap_plug path writes
/// one); larger sets compare against a batched dump of the map.
const PER_ENTRY_LIMIT: usize = 16;

impl<K: Shared, V: Shared> TypedMap<'_, K, V> {
    pub fn name(&self) -> &'static str {
        self.name
    }

    fn single_value(&self) -> Result<()> {
        if self.per_cpu {
            bail!("map '{}' is per-CPU: read it with the per-CPU methods", self.name);
        }
        Ok(())
    }

    fn per_cpu_values(&self) -> Result<()> {
        if !self.per_cpu {
            bail!("map '{}' is not per-CPU", self.name);
        }
        Ok(())
    }

    pub fn get(&self, key: &K) -> Result<Option<V>> {
        self.single_value()?;
        let mut value = zeroed::<V>();
        // SAFETY: sizes checked in MapDef::open.
        let found = unsafe { sys::map_lookup(self.fd, bytes_of(key), bytes_of_mut(&mut value)) }
            .with_context(|| format!("map '{}': lookup", self.name))?;
        Ok(found.then_some(value))
    }

    pub fn set(&self, key: &K, value: &V) -> Result<()> {
        self.single_value()?;
        // SAFETY: sizes checked in MapDef::open.
        unsafe { sys::map_update(self.fd, bytes_of(key), bytes_of(value)) }
            .with_context(|| format!("map '{}': update", self.name))
    }

    /// `false` if the key was not there.
    pub fn remove(&self, key: &K) -> Result<bool> {
        // SAFETY: sizes checked in MapDef::open.
        unsafe { sys::map_delete(self.fd, bytes_of(key)) }.with_context(|| format!("map '{}': delete", self.name))
    }

    /// Every key, walked one `BPF_MAP_GET_NEXT_KEY` at a time (an independent
    /// check of the batched [`entries`](Self::entries)).
    pub fn keys(&self) -> Result<Vec<K>> {
        // SAFETY: key size checked in MapDef::open.
        let raw = unsafe { sys::map_keys(self.fd, std::mem::size_of::<K>()) }
            .with_context(|| format!("map '{}': walk keys", self.name))?;
        Ok(raw.iter().map(|k| from_bytes(k)).collect())
    }

    /// Every entry, read in batches.
    pub fn entries(&self) -> Result<BTreeMap<K, V>> {
        self.single_value()?;
        // SAFETY: sizes checked in MapDef::open.
        let raw = unsafe { sys::map_dump(self.fd, std::mem::size_of::<K>(), std::mem::size_of::<V>()) }
            .with_context(|| format!("map '{}': dump", self.name))?;
        Ok(raw.iter().map(|(k, v)| (from_bytes(k), from_bytes(v))).collect())
    }

    /// Writes all `entries` in one batch.
    pub fn set_all(&self, entries: &[(K, V)]) -> Result<()> {
        self.single_value()?;
        if entries.is_empty() {
            return Ok(());
        }
        let keys: Vec<K> = entries.iter().map(|(k, _)| *k).collect();
        let values: Vec<V> = entries.iter().map(|(_, v)| *v).collect();
        // SAFETY: `keys` and `values` hold entries.len() elements of the
        // checked sizes, contiguous (a Vec of Pod without padding).
        unsafe { sys::map_update_batch(self.fd, slice_bytes(&keys), slice_bytes(&values), entries.len()) }
            .with_context(|| format!("map '{}': batch update", self.name))
    }

    /// Deletes all `keys` in one batch; each must exist.
    pub fn remove_all(&self, keys: &[K]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        // SAFETY: `keys` holds keys.len() keys of the checked size.
        unsafe { sys::map_delete_batch(self.fd, slice_bytes(keys), keys.len()) }
            .with_context(|| format!("map '{}': batch delete", self.name))
    }

    /// Writes the entries of `desired` that are missing or differ (an equal
    /// entry is not rewritten); returns how many were written.
    pub fn write_changed(&self, desired: &BTreeMap<K, V>) -> Result<usize> {
        let changed: Vec<(K, V)> = if desired.len() <= PER_ENTRY_LIMIT {
            let mut changed = Vec::new();
            for (k, v) in desired {
                if self.get(k)?.as_ref() != Some(v) {
                    changed.push((*k, *v));
                }
            }
            changed
        } else {
            let current = self.entries()?;
            desired.iter().filter(|(k, v)| current.get(*k) != Some(*v)).map(|(k, v)| (*k, *v)).collect()
        };
        self.set_all(&changed)?;
        Ok(changed.len())
    }

    /// Deletes every entry whose key `keep` rejects; returns how many.
    pub fn delete_unless(&self, keep: impl Fn(&K) -> bool) -> Result<usize> {
        let keys = if self.per_cpu { self.keys()? } else { self.entries()?.into_keys().collect() };
        let stale: Vec<K> = keys.into_iter().filter(|k| !keep(k)).collect();
        self.remove_all(&stale)?;
        Ok(stale.len())
    }
}

/// Per-CPU maps: one value per possible CPU, each in an 8-byte aligned slot.
impl<K: Shared, V: Shared> TypedMap<'_, K, V> {
    fn per_cpu_stride() -> usize {
        std::mem::size_of::<V>().next_multiple_of(8)
    }

    fn per_cpu_buffer() -> Result<Vec<u8>> {
        let cpus = sys::possible_cpus().context("count possible CPUs")?;
        Ok(vec![0u8; Self::per_cpu_stride() * cpus])
    }

    /// The values of `key` on every possible CPU.
    pub fn get_per_cpu(&self, key: &K) -> Result<Option<Vec<V>>> {
        self.per_cpu_values()?;
        let mut buf = Self::per_cpu_buffer()?;
        // SAFETY: the buffer holds a stride of at least V's checked size per possible CPU.
        let found = unsafe { sys::map_lookup(self.fd, bytes_of(key), &mut buf) }
            .with_context(|| format!("map '{}': lookup", self.name))?;
        let size = std::mem::size_of::<V>();
        Ok(found.then(|| buf.chunks(Self::per_cpu_stride()).map(|c| from_bytes(&c[..size])).collect()))
    }

    /// The values of `key` summed over every possible CPU (all zero when the
    /// key does not exist): what a per-CPU counter counts.
    pub fn get_summed(&self, key: &K) -> Result<V>
    where
        V: Default + std::ops::AddAssign,
    {
        let mut total = V::default();
        for v in self.get_per_cpu(key)?.into_iter().flatten() {
            total += v;
        }
        Ok(total)
    }

    /// Creates `key` zeroed on every CPU unless it exists; `true` if created.
    pub fn create_zeroed_per_cpu(&self, key: &K) -> Result<bool> {
        self.per_cpu_values()?;
        let buf = Self::per_cpu_buffer()?;
        // SAFETY: as in get_per_cpu.
        unsafe { sys::map_create_elem(self.fd, bytes_of(key), &buf) }
            .with_context(|| format!("map '{}': create", self.name))
    }
}

fn slice_bytes<T: Pod>(v: &[T]) -> &[u8] {
    // SAFETY: a slice of Pod is contiguous initialised bytes.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), std::mem::size_of_val(v)) }
}

/// The desired contents of one map, type-erased so that a subsystem's plan
/// can hold maps of different types and one reconcile can sync them all.
pub trait MapContent: Send + Sync {
    fn name(&self) -> &'static str;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Writes missing and changed entries; returns how many.
    fn write(&self, loaded: &Loaded) -> Result<usize>;
    /// Deletes entries not desired (nothing for a map whose contents are
    /// only added to); returns how many.
    fn delete_stale(&self, loaded: &Loaded) -> Result<usize>;
}

/// Whether a map's entries that are not desired are deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ownership {
    /// User space owns every entry: stale ones are deleted by a full pass.
    Whole,
    /// Entries are only written (array maps, whose slots cannot be deleted,
    /// and the one-NIC additions of `apply_iface`).
    Additive,
}

/// Desired entries of a map.
pub struct Entries<K: 'static, V: 'static> {
    pub def: &'static MapDef<K, V>,
    pub entries: BTreeMap<K, V>,
    pub ownership: Ownership,
    /// For maps keyed by netdev: whether a key's netdev is gone. When such
    /// a map is full, those entries are deleted to make room, so that
    /// entries of vanished netdevs never keep a new one from being enforced.
    pub vanished: Option<fn(&K) -> bool>,
}

impl<K: Shared + Send + Sync, V: Shared + Send + Sync> Entries<K, V> {
    /// The desired `entries` of map `def`, boxed for a plan.
    pub fn boxed(def: &'static MapDef<K, V>, entries: BTreeMap<K, V>, ownership: Ownership) -> Box<dyn MapContent> {
        Box::new(Entries { def, entries, ownership, vanished: None })
    }

    /// The same, for a map keyed by netdev (see [`Entries::vanished`]).
    pub fn boxed_per_netdev(
        def: &'static MapDef<K, V>,
        entries: BTreeMap<K, V>,
        ownership: Ownership,
        vanished: fn(&K) -> bool,
    ) -> Box<dyn MapContent> {
        Box::new(Entries { def, entries, ownership, vanished: Some(vanished) })
    }

    /// Writes the entries into the map `fd` (whose kernel info is `info`).
    pub fn write_to(&self, fd: BorrowedFd<'_>, info: &MapInfo) -> Result<usize> {
        let map = self.def.open(fd, info)?;
        match self.ownership {
            Ownership::Whole => self.write_whole(&map, info.max_entries as usize),
            Ownership::Additive => self.write_additive(&map),
        }
    }

    /// Writes a map user space owns whole. When the new entries would not
    /// fit beside the stale ones, the stale ones are deleted first: they
    /// are not in the new state, and an absent entry is never more
    /// permissive than a present one, so the map passes only from the old
    /// state toward the new one, and a valid state that fits the map always
    /// applies, whatever an earlier one left.
    fn write_whole(&self, map: &TypedMap<'_, K, V>, capacity: usize) -> Result<usize> {
        let current = map.entries()?;
        let additions = self.entries.keys().filter(|k| !current.contains_key(k)).count();
        if current.len() + additions > capacity {
            let stale: Vec<K> = current.keys().filter(|k| !self.entries.contains_key(k)).copied().collect();
            log::info!(
                "map '{}': {} entries, {additions} to add, capacity {capacity}: deleting {} stale entries first",
                map.name(),
                current.len(),
                stale.len()
            );
            map.remove_all(&stale)?;
        }
        let changed: Vec<(K, V)> =
            self.entries.iter().filter(|(k, v)| current.get(*k) != Some(*v)).map(|(k, v)| (*k, *v)).collect();
        map.set_all(&changed)?;
        Ok(changed.len())
    }

    /// Writes entries of a map that is only added to; if the map is full,
    /// entries of vanished netdevs are deleted and the write retried.
    fn write_additive(&self, map: &TypedMap<'_, K, V>) -> Result<usize> {
        match (map.write_changed(&self.entries), self.vanished) {
            (Err(e), Some(vanished)) if is_full(&e) => {
                let freed = map.delete_unless(|k| self.entries.contains_key(k) || !vanished(k))?;
                log::info!("map '{}' was full: removed {freed} entries of vanished netdevs", map.name());
                map.write_changed(&self.entries)
            }
            (result, _) => result,
        }
    }
}

/// Whether `e` says a map is full (`E2BIG` from an update).
fn is_full(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.raw_os_error() == Some(libc::E2BIG)))
}

impl<K: Shared + Send + Sync, V: Shared + Send + Sync> MapContent for Entries<K, V> {
    fn name(&self) -> &'static str {
        self.def.name
    }
    fn len(&self) -> usize {
        self.entries.len()
    }
    fn write(&self, loaded: &Loaded) -> Result<usize> {
        let (fd, info) = loaded.map_raw(self.def.name)?;
        self.write_to(fd, info)
    }
    fn delete_stale(&self, loaded: &Loaded) -> Result<usize> {
        let (fd, info) = loaded.map_raw(self.def.name)?;
        match self.ownership {
            Ownership::Additive => Ok(0),
            Ownership::Whole => self.def.open(fd, info)?.delete_unless(|k| self.entries.contains_key(k)),
        }
    }
}

/// A map whose entries the data plane writes: user space only deletes those
/// that `keep` rejects (for example the flows of NICs no longer enforced).
pub struct Prune<K: 'static, V: 'static> {
    pub def: &'static MapDef<K, V>,
    pub keep: Box<dyn Fn(&K) -> bool + Send + Sync>,
}

impl<K: Shared + Send + Sync, V: Shared + Send + Sync> Prune<K, V> {
    pub fn boxed(def: &'static MapDef<K, V>, keep: impl Fn(&K) -> bool + Send + Sync + 'static) -> Box<dyn MapContent> {
        Box::new(Prune { def, keep: Box::new(keep) })
    }
}

impl<K: Shared + Send + Sync, V: Shared + Send + Sync> MapContent for Prune<K, V> {
    fn name(&self) -> &'static str {
        self.def.name
    }
    fn len(&self) -> usize {
        0
    }
    fn write(&self, _loaded: &Loaded) -> Result<usize> {
        Ok(0)
    }
    fn delete_stale(&self, loaded: &Loaded) -> Result<usize> {
        loaded.map(self.def)?.delete_unless(|k| (self.keep)(k))
    }
}

/// Per-CPU counters, one entry per key user space wants counted: missing
/// entries are created zeroed, existing ones never rewritten (that would
/// lose counts), and with [`Ownership::Whole`] the others are deleted.
pub struct Counters<K: 'static, V: 'static> {
    pub def: &'static MapDef<K, V>,
    pub keys: std::collections::BTreeSet<K>,
    pub ownership: Ownership,
    /// As [`Entries::vanished`]: entries of vanished netdevs make room when full.
    pub vanished: Option<fn(&K) -> bool>,
}

impl<K: Shared + Send + Sync, V: Shared + Send + Sync> Counters<K, V> {
    pub fn boxed(
        def: &'static MapDef<K, V>,
        keys: std::collections::BTreeSet<K>,
        ownership: Ownership,
        vanished: Option<fn(&K) -> bool>,
    ) -> Box<dyn MapContent> {
        Box::new(Counters { def, keys, ownership, vanished })
    }

    fn create_missing(&self, map: &TypedMap<'_, K, V>) -> Result<usize> {
        let mut created = 0;
        for key in &self.keys {
            created += usize::from(map.create_zeroed_per_cpu(key)?);
        }
        Ok(created)
    }
}

impl<K: Shared + Send + Sync, V: Shared + Send + Sync> MapContent for Counters<K, V> {
    fn name(&self) -> &'static str {
        self.def.name
    }
    fn len(&self) -> usize {
        self.keys.len()
    }
    fn write(&self, loaded: &Loaded) -> Result<usize> {
        let map = loaded.map(self.def)?;
        match self.create_missing(&map) {
            // Full: whole ownership makes room by deleting the stale entries
            // (as `Entries` does), an additive write those of vanished netdevs.
            Err(e) if is_full(&e) && (self.ownership == Ownership::Whole || self.vanished.is_some()) => {
                let vanished = self.vanished;
                let whole = self.ownership == Ownership::Whole;
                let freed = map.delete_unless(|k| self.keys.contains(k) || !(whole || vanished.is_some_and(|v| v(k))))?;
                log::info!("map '{}' was full: removed {freed} stale entries", map.name());
                self.create_missing(&map)
            }
            result => result,
        }
    }
    fn delete_stale(&self, loaded: &Loaded) -> Result<usize> {
        match self.ownership {
            Ownership::Additive => Ok(0),
            Ownership::Whole => loaded.map(self.def)?.delete_unless(|k| self.keys.contains(k)),
        }
    }
}
