// Image encoding/decoding through sharp: round trips, the quality rules, EXIF orientation and bad input.
import sharp from 'sharp';
import t from 'tap';

import { decodeImage, encodeImage, resolveQuality } from '../../lib/encode/image.js';
import { RequestError } from '../../lib/pipelines/types.js';
import { gradientImage, meanAbsDiff } from '../helpers/media.js';

t.test('resolveQuality: output_compression wins, presets, per-kind default', async (t) => {
  t.equal(resolveQuality({}, 'image'), 75);
  t.equal(resolveQuality({}, 'video'), 50);
  t.equal(resolveQuality({ outputQuality: 'default' }, 'image'), 75);
  t.equal(resolveQuality({ outputQuality: 'default' }, 'video'), 50);
  t.equal(resolveQuality({ outputQuality: 'maximum' }, 'image'), 100);
  t.equal(resolveQuality({ outputQuality: 'high' }, 'video'), 90);
  t.equal(resolveQuality({ outputQuality: 'medium' }, 'image'), 55);
  t.equal(resolveQuality({ outputQuality: 'low' }, 'image'), 35);
  t.equal(resolveQuality({ outputQuality: 'low', outputCompression: 80 }, 'image'), 80);
  t.equal(resolveQuality({ outputQuality: 'maximum', outputCompression: 0 }, 'video'), 0);
  t.equal(resolveQuality({ outputQuality: null, outputCompression: null }, 'video'), 50);
  for (const bad of [-1, 101, 2.5, Number.NaN]) {
    t.throws(() => resolveQuality({ outputCompression: bad }, 'image'), RequestError, `compression ${bad}`);
  }
  t.throws(() => resolveQuality({ outputQuality: 'ultra' }, 'image'), /output_quality must be one of/);
});

t.test('encodeImage: PNG is lossless and ignores quality', async (t) => {
  const img = gradientImage(37, 23);
  const lo = await encodeImage(img, 'png', 5);
  const hi = await encodeImage(img, 'png', 100);
  t.same(lo, hi, 'same bytes whatever the quality');
  const { data, info } = await sharp(lo).raw().toBuffer({ resolveWithObject: true });
  t.equal(info.format, 'raw');
  t.equal(info.width, 37);
  t.equal(info.height, 23);
  t.equal(info.channels, 3);
  t.same(new Uint8Array(data), img.data, 'pixels round-trip exactly');
  t.equal((await sharp(lo).metadata()).format, 'png');
});

for (const format of ['jpeg', 'webp'] as const) {
  t.test(`encodeImage: ${format} follows quality`, async (t) => {
    const img = gradientImage(64, 48);
    const low = await encodeImage(img, format, 10);
    const high = await encodeImage(img, format, 95);
    for (const buf of [low, high]) {
      const meta = await sharp(buf).metadata();
      t.equal(meta.format, format);
      t.equal(meta.width, 64);
      t.equal(meta.height, 48);
    }
    t.ok(high.length > low.length, `q95 (${high.length} B) larger than q10 (${low.length} B)`);
    const errLow = meanAbsDiff(new Uint8Array(await sharp(low).removeAlpha().raw().toBuffer()), img.data);
    const errHigh = meanAbsDiff(new Uint8Array(await sharp(high).removeAlpha().raw().toBuffer()), img.data);
    t.ok(errHigh < errLow, `q95 error ${errHigh.toFixed(2)} < q10 error ${errLow.toFixed(2)}`);
    t.ok(errHigh < 3, `q95 mean abs error ${errHigh.toFixed(2)} < 3`);
    // quality 0 is valid (libjpeg's floor is 1)
    t.ok((await encodeImage(img, format, 0)).length > 0);
  });
}

t.test('encodeImage rejects malformed input', async (t) => {
  await t.rejects(encodeImage({ width: 4, height: 4, data: new Uint8Array(47) }, 'png', 75), /needs 48 bytes, got 47/);
  await t.rejects(encodeImage({ width: 0, height: 4, data: new Uint8Array(0) }, 'png', 75), /positive integers/);
  await t.rejects(encodeImage(gradientImage(4, 4), 'gif' as never, 75), /unsupported image format 'gif'/);
  await t.rejects(encodeImage(gradientImage(4, 4), 'jpeg', 101), /quality must be in 0..100/);
});

t.test('decodeImage: PNG, JPEG, WebP to RGB', async (t) => {
  const img = gradientImage(30, 20);
  for (const format of ['png', 'jpeg', 'webp'] as const) {
    const dec = await decodeImage(await encodeImage(img, format, 100));
    t.equal(dec.width, 30, format);
    t.equal(dec.height, 20, format);
    t.equal(dec.data.length, 30 * 20 * 3, format);
    const err = meanAbsDiff(dec.data, img.data);
    t.ok(format === 'png' ? err === 0 : err < 4, `${format} decode error ${err.toFixed(2)}`);
  }
});

t.test('decodeImage applies EXIF orientation', async (t) => {
  // 40x20 picture: left half red, right half blue. Orientation 6 = display rotated 90 degrees clockwise.
  const w = 40;
  const h = 20;
  const data = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; ++y) for (let x = 0; x < w; ++x) data.set(x < w / 2 ? [255, 0, 0] : [0, 0, 255], (y * w + x) * 3);
  const jpeg = await sharp(data, { raw: { width: w, height: h, channels: 3 } })
    .jpeg({ quality: 95 })
    .withMetadata({ orientation: 6 })
    .toBuffer();
  const meta = await sharp(jpeg).metadata();
  t.equal(meta.orientation, 6, 'the fixture carries orientation 6');
  t.equal(meta.width, 40, 'stored unrotated');
  const dec = await decodeImage(jpeg);
  t.equal(dec.width, 20, 'width after rotation');
  t.equal(dec.height, 40, 'height after rotation');
  // After a clockwise quarter turn the old left (red) half is at the top.
  const top = dec.data.subarray(((5 * dec.width) + 10) * 3, ((5 * dec.width) + 10) * 3 + 3);
  const bottom = dec.data.subarray(((35 * dec.width) + 10) * 3, ((35 * dec.width) + 10) * 3 + 3);
  t.ok((top[0] as number) > 200 && (top[2] as number) < 60, `top is red: ${[...top]}`);
  t.ok((bottom[2] as number) > 200 && (bottom[0] as number) < 60, `bottom is blue: ${[...bottom]}`);
});

t.test('decodeImage drops alpha, expands grey, reduces 16-bit', async (t) => {
  const rgba = Buffer.alloc(4 * 3 * 4);
  for (let i = 0; i < 12; ++i) rgba.set([10 * i, 200, 30, i % 2 ? 0 : 255], i * 4);
  const png = await sharp(rgba, { raw: { width: 4, height: 3, channels: 4 } }).png().toBuffer();
  const dec = await decodeImage(png);
  t.equal(dec.data.length, 4 * 3 * 3);
  for (let i = 0; i < 12; ++i) t.same([...dec.data.subarray(i * 3, i * 3 + 3)], [10 * i, 200, 30], `pixel ${i} colour kept`);

  const grey = await sharp(Buffer.from([0, 64, 128, 255]), { raw: { width: 2, height: 2, channels: 1 } }).png().toBuffer();
  const g = await decodeImage(grey);
  t.same([...g.data], [0, 0, 0, 64, 64, 64, 128, 128, 128, 255, 255, 255]);

  const deep = await sharp(Buffer.from(gradientImage(8, 8).data), { raw: { width: 8, height: 8, channels: 3 } })
    .toColourspace('rgb16')
    .png()
    .toBuffer();
  t.equal((await sharp(deep).metadata()).depth, 'ushort', 'fixture is 16-bit');
  const d = await decodeImage(deep);
  t.equal(d.data.length, 8 * 8 * 3);
  t.ok(meanAbsDiff(d.data, gradientImage(8, 8).data) < 1, '16-bit reduced to the same 8-bit values');
});

t.test('decodeImage rejects corrupt, unsupported, too large and too small input', async (t) => {
  const png = await encodeImage(gradientImage(32, 32), 'png', 75);
  await t.rejects(decodeImage(Buffer.alloc(0)), { name: 'RequestError', message: 'image is empty' });
  await t.rejects(decodeImage(Buffer.from('definitely not an image')), /image is not a readable image/);
  await t.rejects(decodeImage(png.subarray(0, 60), { param: 'input_reference' }), {
    name: 'RequestError',
    param: 'input_reference',
    message: /input_reference (is not a readable image|could not be decoded)/,
  });
  const broken = Buffer.from(png);
  broken.fill(0x55, 60, broken.length - 20);
  await t.rejects(decodeImage(broken), /could not be decoded|not a readable image/);
  const gif = await sharp(Buffer.from(gradientImage(8, 8).data), { raw: { width: 8, height: 8, channels: 3 } }).gif().toBuffer();
  await t.rejects(decodeImage(gif), /unsupported format 'gif' \(png, jpeg, webp accepted\)/);
  const tiff = await sharp(Buffer.from(gradientImage(8, 8).data), { raw: { width: 8, height: 8, channels: 3 } }).tiff().toBuffer();
  await t.rejects(decodeImage(tiff), /unsupported format 'tiff'/);
  await t.rejects(decodeImage(png, { maxPixels: 32 * 31 }), /too large: 32x32 exceeds 992 pixels/);
  await t.rejects(decodeImage(png, { minSide: 33 }), /too small: 32x32, each side must be at least 33/);
  t.equal((await decodeImage(png, { maxPixels: 32 * 32, minSide: 32 })).width, 32, 'bounds are inclusive');
});
