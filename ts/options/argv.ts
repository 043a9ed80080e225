/**
 * A getopt_long-compatible parser, as glibc's behind qemu-img: clustered short options (`-qp`),
 * attached or separate arguments (`-fqcow2`, `-f qcow2`), long options with `=` or a separate
 * value, unambiguous prefixes of long names (`--back` for `--backing-chain`), `--` ending options,
 * and GNU permutation (options may follow positionals). Messages are glibc's, without the prefix.
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
  /** Set when parsing stopped at a key listed in `stopAt` (e.g. `h`, as qemu-img's help()). */
  stoppedAt?: string;
}

/** Options for {@link parseArgs}. */
export interface ParseArgsOptions {
  /** Keys that end parsing at once (qemu-img prints help and exits on `-h`). */
  stopAt?: readonly string[];
}

function bad(msg: string): QimgError {
  return new QimgError("ERR_QIMG_INVALID_ARGUMENT", msg);
}

/** Resolve a long name: exact match, else unique prefix (or prefixes that all mean the same). */
function lookupLong(spec: OptionSpec, name: string, arg: string): [string, [boolean, string]] {
  const exact = Object.hasOwn(spec.long, name) ? spec.long[name] : undefined;
  if (exact) return [name, exact];
  const matches = Object.keys(spec.long).filter((n) => n.startsWith(name));
  if (matches.length === 0 || name === "") throw bad(`unrecognized option '${arg}'`);
  const [h0, k0] = spec.long[matches[0]];
  if (matches.some((m) => spec.long[m][0] !== h0 || spec.long[m][1] !== k0)) {
    throw bad(`option '--${name}' is ambiguous; possibilities:${matches.map((m) => ` '--${m}'`).join("")}`);
  }
  return [matches[0], spec.long[matches[0]]];
}

/** Parse `argv` (without the command word) against `spec`. Throws getopt's messages. */
export function parseArgs(
  argv: readonly string[],
  spec: OptionSpec,
  options: ParseArgsOptions = {},
): ParsedArgs {
  const opts: ParsedArgs["opts"] = [];
  const positionals: string[] = [];
  const stop = new Set(options.stopAt ?? []);
  const done = (key: string): ParsedArgs | undefined =>
    stop.has(key) ? { opts, positionals, stoppedAt: key } : undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--") {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (a.startsWith("--")) {
      const eq = a.indexOf("=");
      const name = eq < 0 ? a.slice(2) : a.slice(2, eq);
      const [full, [hasArg, key]] = lookupLong(spec, name, a);
      if (hasArg) {
        let v: string;
        if (eq >= 0) v = a.slice(eq + 1);
        else {
          if (i + 1 >= argv.length) throw bad(`option '--${full}' requires an argument`);
          v = argv[++i];
        }
        opts.push([key, v]);
      } else {
        if (eq >= 0) throw bad(`option '--${full}' doesn't allow an argument`);
        opts.push([key, true]);
      }
      const r = done(key);
      if (r) return r;
      continue;
    }
    if (a.startsWith("-") && a.length > 1) {
      for (let j = 1; j < a.length; j++) {
        const c = a[j];
        if (!Object.hasOwn(spec.short, c)) throw bad(`invalid option -- '${c}'`);
        if (spec.short[c]) {
          let v = a.slice(j + 1);
          if (v === "") {
            if (i + 1 >= argv.length) throw bad(`option requires an argument -- '${c}'`);
            v = argv[++i];
          }
          opts.push([c, v]);
          const r = done(c);
          if (r) return r;
          break;
        }
        opts.push([c, true]);
        const r = done(c);
        if (r) return r;
      }
      continue;
    }
    positionals.push(a);
  }
  return { opts, positionals };
}

/** Last value given for `key` (`""` for a flag), or undefined. */
export function last(p: ParsedArgs, key: string): string | undefined {
  for (let i = p.opts.length - 1; i >= 0; i--) {
    const [k, v] = p.opts[i];
    if (k === key) return v === true ? "" : v;
  }
  return undefined;
}

/** True if `key` was given. */
export function has(p: ParsedArgs, key: string): boolean {
  return p.opts.some(([k]) => k === key);
}

/** Every value given for `key`, in order. */
export function all(p: ParsedArgs, key: string): string[] {
  return p.opts.filter(([k, v]) => k === key && v !== true).map(([, v]) => v as string);
}
