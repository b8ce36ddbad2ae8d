// Prompt cleaning as the reference pipelines do it before tokenizing: Python's html.unescape and
// whitespace handling reproduced exactly (Python's notion of whitespace, not JavaScript's).
import { HTML5_ENTITIES } from './html-entities.js';

/** The characters Python's str.isspace() accepts (what `\s` and str.strip() use on str). */
const PY_WS = '\\t\\n\\x0b\\x0c\\r\\x1c-\\x1f \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000';
const WS_RUN = new RegExp(`[${PY_WS}]+`, 'gu');
const WS_EDGES = new RegExp(`^[${PY_WS}]+|[${PY_WS}]+$`, 'gu');

/** Python's str.strip() with no arguments. */
export function pyStrip(text: string): string {
  return text.replace(WS_EDGES, '');
}

/** Numeric references that HTML maps to other characters (the windows-1252 range and a few more). */
const INVALID_CHARREFS: Readonly<Record<number, string>> = {
  0x00: '\ufffd', 0x0d: '\r', 0x80: '\u20ac', 0x81: '\x81', 0x82: '\u201a', 0x83: '\u0192', 0x84: '\u201e',
  0x85: '\u2026', 0x86: '\u2020', 0x87: '\u2021', 0x88: '\u02c6', 0x89: '\u2030', 0x8a: '\u0160', 0x8b: '\u2039',
  0x8c: '\u0152', 0x8d: '\x8d', 0x8e: '\u017d', 0x8f: '\x8f', 0x90: '\x90', 0x91: '\u2018', 0x92: '\u2019',
  0x93: '\u201c', 0x94: '\u201d', 0x95: '\u2022', 0x96: '\u2013', 0x97: '\u2014', 0x98: '\u02dc', 0x99: '\u2122',
  0x9a: '\u0161', 0x9b: '\u203a', 0x9c: '\u0153', 0x9d: '\x9d', 0x9e: '\u017e', 0x9f: '\u0178',
};

/** Code points a numeric reference may not produce (they are dropped). */
function isInvalidCodepoint(n: number): boolean {
  return (
    (n >= 0x1 && n <= 0x8) ||
    n === 0xb ||
    (n >= 0xe && n <= 0x1f) ||
    (n >= 0x7f && n <= 0x9f) ||
    (n >= 0xfdd0 && n <= 0xfdef) ||
    (n & 0xfffe) === 0xfffe
  );
}

const CHARREF = /&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)/gu;

function replaceCharref(ref: string): string {
  if (ref[0] === '#') {
    const hex = ref[1] === 'x' || ref[1] === 'X';
    const digits = ref.slice(hex ? 2 : 1).replace(/;$/, '');
    const big = BigInt(hex ? `0x${digits}` : digits);
    if (big > 0x10ffffn) return '\ufffd';
    const num = Number(big);
    const mapped = INVALID_CHARREFS[num];
    if (mapped !== undefined) return mapped;
    if (num >= 0xd800 && num <= 0xdfff) return '\ufffd';
    if (isInvalidCodepoint(num)) return '';
    return String.fromCodePoint(num);
  }
  const whole = HTML5_ENTITIES[ref];
  if (whole !== undefined) return whole;
  // the longest entity name that prefixes the reference (HTML's legacy entities without ';')
  const chars = Array.from(ref);
  for (let x = chars.length - 1; x > 1; --x) {
    const head = chars.slice(0, x).join('');
    const hit = HTML5_ENTITIES[head];
    if (hit !== undefined) return hit + chars.slice(x).join('');
  }
  return `&${ref}`;
}

/** Python's html.unescape: named and numeric character references replaced per HTML5. */
export function unescapeHtml(text: string): string {
  if (!text.includes('&')) return text;
  return text.replace(CHARREF, (_m, ref: string) => replaceCharref(ref));
}

/**
 * The Wan pipelines' prompt_clean: html.unescape twice, strip, collapse every whitespace run to one
 * space, strip. (The reference also runs ftfy.fix_text first when ftfy is installed; the golden
 * outputs were produced without it.)
 */
export function cleanPromptWan(text: string): string {
  const basic = pyStrip(unescapeHtml(unescapeHtml(text)));
  return pyStrip(basic.replace(WS_RUN, ' '));
}
