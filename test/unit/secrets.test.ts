/** `--object secret` resolution: raw, base64, file, QEMU's errors, and the UTF-8 check. */
import { execFileSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { afterAll, describe, expect, it } from "vitest";
import { parseObjects } from "../../ts/options/object.js";
import { loadSecrets, resolveKeySecret, resolveSecret } from "../../ts/options/secrets.js";
import { tempDir } from "../helpers/peers.js";

const t = tempDir("qimg-secrets-");
afterAll(() => t.cleanup());

function objs(...defs: string[]) {
  const o = parseObjects(defs);
  if (!Array.isArray(o)) throw new Error("help");
  return o;
}

describe("secrets", () => {
  it("resolves inline raw and base64 data", () => {
    const o = objs("secret,id=a,data=hello", "secret,id=b,data=aGVsbG8=,format=base64");
    expect(resolveSecret(o, "a").toString()).toBe("hello");
    expect(resolveSecret(o, "b").toString()).toBe("hello");
  });

  it("reads files (raw bytes, trailing newline kept as QEMU does) and base64 files", () => {
    writeFileSync(t.path("raw"), "pass\n");
    writeFileSync(t.path("b64"), "cGFzcw==");
    const o = objs(`secret,id=f,file=${t.path("raw")}`, `secret,id=g,file=${t.path("b64")},format=base64`);
    expect(resolveSecret(o, "f").toString()).toBe("pass\n");
    expect(resolveSecret(o, "g").toString()).toBe("pass");
  });

  it("gives QEMU's messages, never the data", () => {
    const o = objs("secret,id=a,data=topsecret", `secret,id=f,file=${t.path("missing")}`);
    expect(() => resolveSecret(o, "zz")).toThrow("No secret with id 'zz'");
    expect(() => resolveSecret(o, "f")).toThrow(
      /^Unable to read .*missing: Failed to open file “.*missing”: No such file or directory$/,
    );
    expect(() => loadSecrets(o)).toThrow(/Unable to read/);
    writeFileSync(t.path("badb64"), "!!notbase64!!");
    const b = objs(`secret,id=x,file=${t.path("badb64")},format=base64`);
    expect(() => resolveSecret(b, "x")).toThrow("Base64 data contains invalid characters");
    try {
      resolveSecret(o, "zz");
    } catch (e) {
      expect(String((e as Error).message)).not.toContain("topsecret");
      expect((e as { code?: string }).code).toBe("ERR_QIMG_INVALID_ARGUMENT");
    }
  });

  it("key secrets must be valid UTF-8 without NUL, as QEMU's qcrypto_secret_lookup_as_utf8", () => {
    const o = objs(
      "secret,id=bin,data=/w==,format=base64",
      "secret,id=nul,data=YQBi,format=base64",
      "secret,id=ok,data=zoé",
    );
    expect(() => resolveKeySecret(o, "bin")).toThrow("Data from secret bin is not valid UTF-8");
    expect(() => resolveKeySecret(o, "nul")).toThrow("Data from secret nul is not valid UTF-8");
    expect(resolveKeySecret(o, "ok").toString("utf8")).toBe("zoé");
  });

  it("decrypts keyid= secrets (AES-256-CBC, ciphertext from openssl) with QEMU's errors", () => {
    const key = Buffer.alloc(32, 7);
    const iv = Buffer.alloc(16, 9);
    const enc = (plain: string, pad = true) =>
      execFileSync(
        "openssl",
        [
          "enc",
          "-aes-256-cbc",
          ...(pad ? [] : ["-nopad"]),
          "-K",
          key.toString("hex"),
          "-iv",
          iv.toString("hex"),
        ],
        { input: plain },
      ).toString("base64");
    const k = `secret,id=k0,data=${key.toString("base64")},format=base64`;
    const ivb = iv.toString("base64");
    const o = objs(
      k,
      `secret,id=s,data=${enc("hunter2")},keyid=k0,iv=${ivb},format=base64`,
      `secret,id=noiv,data=${enc("x")},keyid=k0,format=base64`,
      `secret,id=shortiv,data=${enc("x")},keyid=k0,iv=AAAA,format=base64`,
      `secret,id=len,data=AAAA,keyid=k0,iv=${ivb},format=base64`,
      `secret,id=pad,data=${enc("abcabcabcabcabc\x20", false)},keyid=k0,iv=${ivb},format=base64`,
      "secret,id=short,data=abc",
      `secret,id=badkey,data=${enc("x")},keyid=short,iv=${ivb},format=base64`,
      `secret,id=later,data=${enc("x")},keyid=k9,iv=${ivb},format=base64`,
      `secret,id=self,data=${enc("x")},keyid=self,iv=${ivb},format=base64`,
      k.replace("k0", "k9"),
    );
    expect(resolveSecret(o, "s").toString()).toBe("hunter2");
    expect(() => resolveSecret(o, "noiv")).toThrow("IV is required to decrypt secret");
    expect(() => resolveSecret(o, "shortiv")).toThrow("IV should be 16 bytes in length not 3");
    expect(() => resolveSecret(o, "len")).toThrow("Length 3 must be a multiple of block size 16");
    expect(() => resolveSecret(o, "pad")).toThrow("Incorrect number of padding bytes (32)");
    expect(() => resolveSecret(o, "badkey")).toThrow("Key should be 32 bytes in length");
    expect(() => resolveSecret(o, "later")).toThrow("No secret with id 'k9'");
    expect(() => resolveSecret(o, "self")).toThrow("Secret with id 'self' has no data");
  });
});
