//! Cleanup as a guard: the steps that undo a partly done piece of work (a container the
//! shim has half started), run last-first when the guard is dropped unless it was
//! disarmed. Every early return and `?` of the work then cleans up by itself, and what
//! each step undoes is written once, next to the step that made it.

/// Undo steps, run in reverse order on drop unless [`Undo::disarm`] was called.
#[must_use = "dropping the guard at once runs its steps"]
pub(crate) struct Undo<'a> {
    steps: Vec<Box<dyn FnOnce() + 'a>>,
}

impl<'a> Undo<'a> {
    pub(crate) fn new() -> Undo<'a> {
        Undo { steps: Vec::new() }
    }

    /// Adds the step that undoes what was just made; it runs before the steps added
    /// earlier, as a teardown must (the container before the root it runs in).
    pub(crate) fn push(&mut self, step: impl FnOnce() + 'a) {
        self.steps.push(Box::new(step));
    }

    /// The work is complete: keep what it made, run no step.
    pub(crate) fn disarm(mut self) {
        self.steps.clear();
    }
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        while let Some(step) = self.steps.pop() {
            step();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::cell::RefCell;

    /// Work that makes `made` things and then fails or succeeds; returns what was undone.
    fn work(made: usize, succeed: bool) -> Vec<usize> {
        let undone = RefCell::new(Vec::new());
        {
            let mut undo = Undo::new();
            for thing in 0..made {
                let undone = &undone;
                undo.push(move || undone.borrow_mut().push(thing));
            }
            if succeed {
                undo.disarm();
            }
        }
        undone.into_inner()
    }

    #[test]
    fn a_failure_undoes_everything_made_last_first() {
        let cases: &[(usize, bool, &[usize])] = &[
            (0, false, &[]),
            (1, false, &[0]),
            (3, false, &[2, 1, 0]),
            (3, true, &[]),
            (0, true, &[]),
        ];
        for &(made, succeed, want) in cases {
            assert_eq!(work(made, succeed), want, "made {made}, succeed {succeed}");
        }
    }

    #[test]
    fn an_early_return_cleans_up() {
        fn start(undone: &RefCell<Vec<&'static str>>, fail_at: u32) -> Result<(), u32> {
            let mut undo = Undo::new();
            undo.push(|| undone.borrow_mut().push("unmount"));
            if fail_at == 1 {
                return Err(1);
            }
            undo.push(|| undone.borrow_mut().push("delete"));
            if fail_at == 2 {
                return Err(2);
            }
            undo.disarm();
            Ok(())
        }
        let cases: &[(u32, Result<(), u32>, &[&str])] = &[
            (1, Err(1), &["unmount"]),
            (2, Err(2), &["delete", "unmount"]),
            (0, Ok(()), &[]),
        ];
        for &(fail_at, result, want) in cases {
            let undone = RefCell::new(Vec::new());
            assert_eq!(start(&undone, fail_at), result);
            assert_eq!(undone.into_inner(), want, "failing at {fail_at}");
        }
    }
}
