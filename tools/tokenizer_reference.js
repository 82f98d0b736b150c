#!/usr/bin/env node
// Regenerates tests/data/gpt2_reference_ids.json: token ids of hard strings computed by the
// reference encoder (the JavaScript encoder of the npm package gpt-3-encoder, a port of OpenAI's
// encoder.py), which tests/trainers/data/gpt2_tokenizer_test.cpp compares ztrain's C++ tokenizer
// against. Run it once when the strings change:
//
//   node tools/gpt2_reference_ids.js [--package DIR] > tests/data/gpt2_reference_ids.json
//
// Without --package it runs `npm pack gpt-3-encoder@1.1.4` in a temp dir and loads that copy.
//
// Strings avoid U+0085, U+180E and U+FEFF: JavaScript's \s disagrees with Python's (and with
// PCRE2's) about those three, so no single "reference" answer exists for them.
'use strict';
const { execFileSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');

const VERSION = '1.1.4';

function packageDir() {
  const i = process.argv.indexOf('--package');
  if (i >= 0) return path.resolve(process.argv[i + 1]);
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'gpt2-ref-'));
  execFileSync('npm', ['pack', '--silent', `gpt-3-encoder@${VERSION}`], { cwd: tmp, stdio: ['ignore', 'ignore', 'inherit'] });
  execFileSync('tar', ['-xzf', `gpt-3-encoder-${VERSION}.tgz`], { cwd: tmp });
  return path.join(tmp, 'package');
}

const { encode, decode } = require(path.join(packageDir(), 'Encoder.js'));

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
  'The <|endoftext|> marker is plain text for this encoder.',
  'mixed123abc 456def ghi789 _under_score_ CamelCaseWord',
  'A long paragraph: The quick brown fox jumps over the lazy dog. ' +
      'Pack my box with five dozen liquor jugs! How vexingly quick daft zebras jump; ' +
      'sphinx of black quartz, judge my vow.',
];

const cases = strings.map(text => {
  const ids = encode(text);
  if (decode(ids) !== text) throw new Error(`reference encoder does not round-trip ${JSON.stringify(text)}`);
  return { text, ids };
});
// One case per line keeps the file readable and its diffs small.
const generator = JSON.stringify(`tools/gpt2_reference_ids.js with npm gpt-3-encoder@${VERSION}`);
process.stdout.write(`{"generator": ${generator},\n "cases": [\n` +
                     cases.map(c => '  ' + JSON.stringify(c)).join(',\n') + '\n]}\n');
