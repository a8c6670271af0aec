//! At most [`MAX_GUESTS`] QEMU guests at a time on this machine, across every test
//! process, so the test binaries can run side by side (`scripts/qemu-tests.sh`) and
//! still never load the host with more than two emulated machines.
//!
//! A test that starts guests first reserves as many as it will run at once
//! ([`reserve`]), all in one go, and holds them until the [`Reservation`] drops. The
//! slots are `flock`ed files, so a test process that dies frees its slots with it.
//! Taking every slot a test needs at once, and only one taker at a time (the gate
//! file), is what keeps two tests from each holding one slot and waiting for the
//! other's: whoever holds a slot is never waiting for another.
//!
//! [`VmBuilder::spawn`](crate::VmBuilder::spawn) refuses to start a guest beyond what
//! this process has reserved, so a test that forgets to reserve fails at once with a
//! clear error instead of quietly running a third guest.

use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

/// Guests running at once on this machine (two cores; TCG runs a guest per core).
pub const MAX_GUESTS: usize = 2;

/// Guests this process has reserved, over all its running tests.
static RESERVED: AtomicUsize = AtomicUsize::new(0);
/// Guests this process runs now.
static RUNNING: AtomicUsize = AtomicUsize::new(0);

/// Where the slot files live: `$CLOUDOS_GUEST_SLOTS`, else a fixed directory under
/// /tmp, the same for every process of this machine.
fn slots_dir() -> PathBuf {
    std::env::var_os("CLOUDOS_GUEST_SLOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/cloudos-guest-slots"))
}

fn open_lock(dir: &Path, name: &str) -> File {
    fs::create_dir_all(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    let path = dir.join(name);
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()))
}

/// `flock` on `file`; `Ok(false)` when `wait` is false and another holds it.
fn flock(file: &File, wait: bool) -> std::io::Result<bool> {
    let op = libc::LOCK_EX | if wait { 0 } else { libc::LOCK_NB };
    loop {
        // SAFETY: flock on a descriptor this function borrows; no memory is shared.
        if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
            return Ok(true);
        }
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) if !wait => return Ok(false),
            _ => return Err(err),
        }
    }
}

/// Guests reserved for one test; the slots are free again when it drops.
#[derive(Debug)]
pub struct Reservation {
    slots: Vec<File>,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        RESERVED.fetch_sub(self.slots.len(), Ordering::SeqCst);
        // Closing the files releases the locks.
        self.slots.clear();
    }
}

/// Reserves `guests` of the machine's [`MAX_GUESTS`], waiting until they are free.
/// Call it first in a test that starts guests, and keep the value alive to its end.
pub fn reserve(guests: usize) -> Reservation {
    reserve_in(&slots_dir(), guests)
}

fn reserve_in(dir: &Path, guests: usize) -> Reservation {
    assert!(
        (1..=MAX_GUESTS).contains(&guests),
        "a test may run 1 to {MAX_GUESTS} guests at once, not {guests}"
    );
    let gate = open_lock(dir, "gate");
    flock(&gate, true).expect("locking the guest slots' gate");
    let mut slots: Vec<File> = Vec::with_capacity(guests);
    let mut taken = [false; MAX_GUESTS];
    // Only the gate's holder takes slots, so the slots it holds while it waits
    // for more are never wanted by anyone who waits.
    while slots.len() < guests {
        for (i, is_taken) in taken.iter_mut().enumerate() {
            if *is_taken || slots.len() == guests {
                continue;
            }
            let file = open_lock(dir, &format!("slot-{i}"));
            if flock(&file, false).expect("locking a guest slot") {
                *is_taken = true;
                slots.push(file);
            }
        }
        if slots.len() < guests {
            thread::sleep(Duration::from_millis(200));
        }
    }
    drop(gate);
    RESERVED.fetch_add(slots.len(), Ordering::SeqCst);
    Reservation { slots }
}

/// One running guest of this process, counted from [`started`] until [`end`](Running::end)
/// or drop.
#[derive(Debug)]
pub(crate) struct Running {
    ended: AtomicBool,
}

impl Running {
    /// The guest is gone (it exited, or was stopped): its slot may start another.
    pub(crate) fn end(&self) {
        if !self.ended.swap(true, Ordering::SeqCst) {
            RUNNING.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.end();
    }
}

/// Counts a guest about to start; refuses one beyond what this process reserved.
pub(crate) fn started() -> Result<Running, NotReserved> {
    let reserved = RESERVED.load(Ordering::SeqCst);
    let running = RUNNING.fetch_add(1, Ordering::SeqCst) + 1;
    if running > reserved {
        RUNNING.fetch_sub(1, Ordering::SeqCst);
        return Err(NotReserved { running, reserved });
    }
    Ok(Running {
        ended: AtomicBool::new(false),
    })
}

/// A guest started beyond the process's reservation.
#[derive(Debug, thiserror::Error)]
#[error(
    "guest {running} of this test process, but only {reserved} reserved: \
     call cloudos_tests::guests::reserve(n) first in the test"
)]
pub struct NotReserved {
    running: usize,
    reserved: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One test for the counters: they are process-wide, so tests of them in
    /// parallel would see each other's guests.
    #[test]
    fn guests_need_a_reservation_and_slots_are_exclusive() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_owned();

        assert!(started().is_err(), "a guest without a reservation");
        let one = reserve_in(&dir, 1);
        let first = started().expect("the reserved guest");
        let err = started().expect_err("a second guest on one reservation");
        assert!(err.to_string().contains("reserve"), "{err}");
        first.end();
        let again = started().expect("the slot of an ended guest");

        // The other slot is free; a second reservation of two must wait for `one`.
        let waiter = thread::spawn(move || reserve_in(&dir, 2));
        thread::sleep(Duration::from_millis(600));
        assert!(!waiter.is_finished(), "two slots taken while one was held");
        drop(again);
        drop(one);
        let two = waiter.join().unwrap();
        assert_eq!(two.slots.len(), 2);
    }
}
