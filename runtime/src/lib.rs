//! CloudOS container runtime (issue 4): work in progress.
