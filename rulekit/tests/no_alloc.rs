//! Evaluating a compiled rule allocates nothing: counted with a global
//! allocator that tallies this thread's allocations.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use tapwire_rulekit::{Env, FieldRef, Macros, Schema, Value, compile};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

struct Any;

impl Schema for Any {
    fn resolve(&self, name: &str) -> Option<FieldRef> {
        let id = ["status", "path", "ip", "agent"]
            .iter()
            .position(|f| *f == name)?;
        Some(FieldRef {
            id: id as u16,
            arg: "".into(),
        })
    }
}

struct Txn;

impl Env for Txn {
    fn get<'a>(&'a self, f: &'a FieldRef) -> Value<'a> {
        match f.id {
            0 => Value::Int(503),
            1 => Value::Str("/v1/orders/42"),
            2 => Value::Ip([10, 1, 2, 3].into()),
            _ => Value::Missing,
        }
    }
}

#[test]
fn evaluation_does_not_allocate() {
    let mut macros = Macros::default();
    macros.define("failing", "status >= 500", &Any).unwrap();
    let rule = compile(
        "failing() and (path matches /^\\/v1\\/orders\\/[0-9]+$/ or status matches /^4/) \
         and ip in 10.0.0.0/8 and path in [\"/a\", \"/b\", \"/v1/orders/42\"] \
         and not starts_with(path, \"/health\") and not agent",
        &Any,
        &macros,
    )
    .unwrap();
    // The first evaluation warms the regex engine's per-thread cache.
    assert!(rule.matches(&Txn));
    let before = ALLOCATIONS.with(Cell::get);
    for _ in 0..1000 {
        assert!(rule.matches(&Txn));
    }
    assert_eq!(ALLOCATIONS.with(Cell::get) - before, 0);
    // The counter sees allocations.
    let boxed = std::hint::black_box(Box::new(1u64));
    assert_eq!(ALLOCATIONS.with(Cell::get) - before, 1, "{boxed}");
}
