//! `zync-web`: placeholder until the HTTP face lands.

fn main() {}
