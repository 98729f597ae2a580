//! Compile tests: the forms that must compile, and every compile error with its message and
//! span pinned in `ui/fail/*.stderr` (regenerate with `TRYBUILD=overwrite` and read the diff).

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("ui/pass/*.rs");
    t.compile_fail("ui/fail/*.rs");
}
