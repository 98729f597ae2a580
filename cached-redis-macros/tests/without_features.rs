//! Compile errors that depend on cached-redis's features, checked against a build of it with
//! none (the main compile tests, in `tests/`, have them all on).

#[test]
fn without_features() {
    trybuild::TestCases::new().compile_fail("tests/without_features/*.rs");
}
