//! `gateway import-nginx FILE [-o proxy.toml] [--check]`: the translation is
//! `gateway-nginx-import`'s; this prints it, lists what was left out, and checks the result.

use std::path::Path;
use std::process::ExitCode;

/// Exit status: 0 everything translated, 2 something left out (listed on stderr), 1 the
/// file cannot be read or parsed, the output cannot be written, or `--check` refuses it.
pub fn run(file: &Path, output: Option<&Path>, check: bool) -> ExitCode {
    let import = match gateway_nginx_import::import(file) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("{}", gateway_tls::error_chain(&e));
            return ExitCode::FAILURE;
        }
    };
    for note in &import.notes {
        eprintln!("{note}");
    }
    let written = match output {
        Some(path) => match std::fs::write(path, &import.toml) {
            Ok(()) => {
                eprintln!("wrote {}", path.display());
                path.to_owned()
            }
            Err(e) => {
                eprintln!("cannot write {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        },
        None => {
            print!("{}", import.toml);
            // `--check` reads the text from a file, as `gateway check` would.
            let path = std::env::temp_dir().join(format!("gateway-import-{}.toml", std::process::id()));
            if check {
                if let Err(e) = std::fs::write(&path, &import.toml) {
                    eprintln!("cannot write {} for --check: {e}", path.display());
                    return ExitCode::FAILURE;
                }
            }
            path
        }
    };
    if check {
        let ok = crate::inspect::load(&written).is_some();
        if output.is_none() {
            let _ = std::fs::remove_file(&written);
        }
        if !ok {
            return ExitCode::FAILURE;
        }
        eprintln!("gateway check: the imported configuration is valid");
    }
    eprintln!(
        "{}: {} directive(s) not translated",
        file.display(),
        import.notes.len()
    );
    if import.notes.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}
