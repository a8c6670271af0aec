//! The store's tests run against both backends: each test body is a function taking a
//! [`NewStore`], and [`on_both_backends!`] makes a `#[test]` of it for each backend. On
//! etcd every new store is a key prefix of its own on the test process's shared etcd
//! member (a real etcd; without its binary the test is a missing prerequisite).

use std::sync::Arc;

use crate::{RedbStore, Store};

/// Makes a fresh, empty store of the backend under test.
pub(crate) type NewStore<'a> = &'a dyn Fn() -> Arc<dyn Store>;

pub(crate) fn redb() -> Arc<dyn Store> {
    Arc::new(RedbStore::in_memory().expect("in-memory store"))
}

/// `on_both_backends!(test_a, test_b)`: for each `fn test_a(new: NewStore)` in scope, a
/// test `on_redb::test_a` and a test `on_etcd::test_a`.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod on_redb {
            $(
                #[test]
                fn $name() {
                    super::$name(&$crate::backends::redb)
                }
            )*
        }
        mod on_etcd {
            $(
                #[test]
                fn $name() {
                    let fixture = cloudos_testkit::require!(
                        $crate::etcd::fixture::EtcdFixture::shared()
                    );
                    super::$name(&|| -> ::std::sync::Arc<dyn $crate::Store> {
                        ::std::sync::Arc::new(fixture.store())
                    })
                }
            )*
        }
    };
}
pub(crate) use on_both_backends;
