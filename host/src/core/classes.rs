//! Client classes, shared by the sessions that name them.
//!
//! A class is a short name that many sessions share ("default", a bot
//! framework's name). When each session held a copy of its own, the tick,
//! which reads a session's class at every assessment, touched one more
//! allocation per session each time, and the policy's batch matched the
//! names byte by byte instead of by pointer (BENCHMARKS.md, issue 16,
//! ninth part). Sessions now get the first copy of their class's name.
//!
//! Clients choose their class, so what is kept here is bounded: past
//! [`MAX_SHARED_CLASSES`] names, or for a name longer than
//! [`MAX_SHARED_CLASS_BYTES`], a session keeps a copy of its own, as
//! before. Nothing else depends on sharing.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

/// Distinct class names kept at most.
const MAX_SHARED_CLASSES: usize = 1024;

/// Longest class name kept, bytes.
const MAX_SHARED_CLASS_BYTES: usize = 128;

/// The class names seen so far, each once.
#[derive(Default)]
pub(crate) struct ClientClasses {
    known: Mutex<HashSet<Arc<str>>>,
}

impl ClientClasses {
    /// The shared copy of `class`'s name, or `class` itself when there is
    /// none and no room to keep it.
    pub(crate) fn share(&self, class: Arc<str>) -> Arc<str> {
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(shared) = known.get(&*class) {
            return Arc::clone(shared);
        }
        if known.len() < MAX_SHARED_CLASSES && class.len() <= MAX_SHARED_CLASS_BYTES {
            known.insert(Arc::clone(&class));
        }
        class
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_naming_the_same_class_share_one_copy() {
        let classes = ClientClasses::default();
        let first = classes.share(Arc::from("alpha"));
        let second = classes.share(Arc::from("alpha"));
        let other = classes.share(Arc::from("beta"));
        assert!(Arc::ptr_eq(&first, &second));
        assert!(!Arc::ptr_eq(&first, &other));
        assert_eq!(&*other, "beta");
    }

    #[test]
    fn what_is_kept_is_bounded_and_names_past_the_bound_still_work() {
        let classes = ClientClasses::default();
        for n in 0..MAX_SHARED_CLASSES {
            classes.share(Arc::from(format!("class-{n}")));
        }
        let late = classes.share(Arc::from("late"));
        let again = classes.share(Arc::from("late"));
        assert_eq!(&*again, "late");
        assert!(!Arc::ptr_eq(&late, &again), "kept past the bound");
        let long = "x".repeat(MAX_SHARED_CLASS_BYTES + 1);
        let fresh = ClientClasses::default();
        let kept = fresh.share(Arc::from(long.as_str()));
        assert!(!Arc::ptr_eq(&kept, &fresh.share(Arc::from(long.as_str()))));
        assert_eq!(
            classes.known.lock().map(|known| known.len()).unwrap_or(0),
            MAX_SHARED_CLASSES
        );
    }
}
