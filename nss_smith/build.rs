//! Gives the NSS module the SONAME it is installed under (glibc dlopens it by that
//! file name; packaging tools expect DT_SONAME to match).
fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libnss_smith.so.2");
}
