pub fn configure() {
    println!("cargo:rerun-if-changed=build/main.rs");
    println!("cargo:rerun-if-env-changed=PROFILE");

    // Note that by default `libzmq` builds without `libsodium` by instead
    // relying on `tweetnacl`. However since this `tweetnacl` [has never been
    // audited nor is ready for production](https://github.com/zeromq/libzmq/issues/3006),
    // we link against `libsodium` to enable `ZMQ_CURVE`.
    // Patched for Zync: link the libsodium that libsodium-sys-stable built
    // (its build script exports where), so libzmq has CURVE.
    println!("cargo:rerun-if-env-changed=DEP_SODIUM_LIB");
    println!("cargo:rerun-if-env-changed=DEP_SODIUM_INCLUDE");
    let sodium = match (std::env::var("DEP_SODIUM_LIB"), std::env::var("DEP_SODIUM_INCLUDE")) {
        (Ok(lib), Ok(include)) => zeromq_src::LibLocation::new(lib, include),
        _ => panic!("libsodium-sys-stable did not say where libsodium is (DEP_SODIUM_LIB, DEP_SODIUM_INCLUDE)"),
    };
    zeromq_src::Build::new()
        .with_libsodium(Some(sodium))
        .build();
}

fn main() {
    configure()
}
