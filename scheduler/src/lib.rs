//! CloudOS scheduler (issue 4): work in progress.
