//! Certificates for cluster TLS, made by `openssl` (Debian: `apt-get install
//! openssl`): a CA, and for each node a key and a certificate it signed, for
//! both ends of a link (serverAuth and clientAuth).

use std::path::Path;
use std::process::Command;

/// Makes, in `dir`, a CA (`{ca}.key`, `{ca}.pem`) and for each `(name, ip)` of
/// `nodes` a key (`{name}.key`) and a certificate (`{name}.pem`) for that IP
/// address, signed by the CA. An error names what openssl said.
pub fn make_certificates(dir: &Path, ca: &str, nodes: &[(&str, &str)]) -> Result<(), String> {
    let run = |args: &[&str]| -> Result<(), String> {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .map_err(|e| format!("openssl does not run ({e}; Debian: apt-get install openssl)"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let (ca_key, ca_pem, ca_subject) = (
        format!("{ca}.key"),
        format!("{ca}.pem"),
        format!("/CN={ca}"),
    );
    let mut args = vec!["req", "-x509"];
    args.extend(ec);
    args.extend([
        "-keyout",
        &ca_key,
        "-out",
        &ca_pem,
        "-days",
        "2",
        "-subj",
        &ca_subject,
    ]);
    run(&args)?;
    for (node, ip) in nodes {
        let ext = format!("{node}.ext");
        std::fs::write(
            dir.join(&ext),
            format!(
                "subjectAltName=IP:{ip}\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\n"
            ),
        )
        .map_err(|e| format!("cannot write in {}: {e}", dir.display()))?;
        let (key, csr, pem, subject) = (
            format!("{node}.key"),
            format!("{node}.csr"),
            format!("{node}.pem"),
            format!("/CN={node}"),
        );
        let mut args = vec!["req"];
        args.extend(ec);
        args.extend(["-keyout", &key, "-out", &csr, "-subj", &subject]);
        run(&args)?;
        run(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_pem,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            &ext,
        ])?;
    }
    Ok(())
}
