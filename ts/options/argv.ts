/**
 * A getopt_long-compatible parser: clustered short options (`-fqcow2`, `-qp`), separate or
 * attached arguments (`-f qcow2`), long options with `=` or a separate value, `--` ending
 * options, and GNU permutation (options may follow positionals), as qemu-img parses.
 */
import { QimgError } from "../errors.js";

/** One command's option table. */
export interface OptionSpec {
  /** Short options: letter → takes an argument. */
  short: Record<string, boolean>;
  /** Long options: name → [takes an argument, the short letter or key it stands for]. */
  long: Record<string, [boolean, string]>;
}

/** Parsed options (in order; repeats kept) and positionals. */
export interface ParsedArgs {
  /** Options as [key, value] (value `true` for flags). Long options map to their key. */
  opts: Array<[string, string | true]>;
  /** Positional arguments. */
  positionals: string[];
}

function bad(msg: string): QimgError {
  return new QimgError("ERR_QIMG_INVALID_ARGUMENT", msg);
}

/** Parse `argv` against `spec`. */
export function parseArgs(argv: string[], spec: OptionSpec): ParsedArgs {
  const opts: ParsedArgs["opts"] = [];
  const positionals: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--") {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (a.startsWith("--")) {
      const eq = a.indexOf("=");
      const name = eq < 0 ? a.slice(2) : a.slice(2, eq);
      const entry = spec.long[name];
      if (!entry) throw bad(`unrecognized option '${a}'`);
      const [hasArg, key] = entry;
      if (hasArg) {
        let v: string;
        if (eq >= 0) v = a.slice(eq + 1);
        else {
          if (i + 1 >= argv.length) throw bad(`option '--${name}' requires an argument`);
          v = argv[++i];
        }
        opts.push([key, v]);
      } else {
        if (eq >= 0) throw bad(`option '--${name}' doesn't allow an argument`);
        opts.push([key, true]);
      }
      continue;
    }
    if (a.startsWith("-") && a.length > 1) {
      for (let j = 1; j < a.length; j++) {
        const c = a[j];
        if (!(c in spec.short)) throw bad(`invalid option -- '${c}'`);
        if (spec.short[c]) {
          let v = a.slice(j + 1);
          if (v === "") {
            if (i + 1 >= argv.length) throw bad(`option requires an argument -- '${c}'`);
            v = argv[++i];
          }
          opts.push([c, v]);
          break;
        }
        opts.push([c, true]);
      }
      continue;
    }
    positionals.push(a);
  }
  return { opts, positionals };
}

/** Last value given for `key`. */
export function last(p: ParsedArgs, key: string): string | undefined {
  for (let i = p.opts.length - 1; i >= 0; i--) {
    const [k, v] = p.opts[i];
    if (k === key) return v === true ? "" : v;
  }
  return undefined;
}

/** True if flag `key` was given. */
export function has(p: ParsedArgs, key: string): boolean {
  return p.opts.some(([k]) => k === key);
}

/** Every value given for `key`, in order. */
export function all(p: ParsedArgs, key: string): string[] {
  return p.opts.filter(([k, v]) => k === key && v !== true).map(([, v]) => v as string);
}
