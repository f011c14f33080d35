#!/usr/bin/env python3
"""Writes the seed corpora of the libFuzzer harnesses (docs/fuzzing.md) under DIR/{xml,comfy,
comfy_ui,pickle,safetensors,png,gguf,t5,onnx}: the repository's graphs and test data, the workflow XML and ComfyUI JSON held in
the test programs' string literals (cycles, links, params, upgrades, bad values), small
safetensors and .latent files, small PNGs (gray16, palette+tRNS, RGBA, provenance chunks), and small GGUF files
(one block of every supported type, metadata of every value type, an orig_shape override, the
tiny T5 of the goldens with llama.cpp names), and
the T5 tokenizer's golden prompts.
Run from the repository root: python3 tests/fuzz/make_corpus.py build-fuzz/corpus"""
import codecs, glob, hashlib, json, os, re, shutil, struct, sys, zlib

out = sys.argv[1] if len(sys.argv) > 1 else 'build-fuzz/corpus'
for k in ('xml', 'comfy', 'comfy_ui', 'pickle', 'safetensors', 'png', 'gguf', 't5', 'onnx'):
    os.makedirs(os.path.join(out, k), exist_ok=True)

def put(kind, name, data):
    with open(os.path.join(out, kind, name), 'wb') as f:
        f.write(data)

for f in glob.glob('graphs/*.xml') + glob.glob('tests/data/xml/*.xml'):
    shutil.copy(f, os.path.join(out, 'xml'))
for f in glob.glob('tests/data/comfy/*.json'):
    shutil.copy(f, os.path.join(out, 'comfy'))
    shutil.copy(f, os.path.join(out, 'comfy_ui'))
for f in glob.glob('tests/data/pickle/*'):
    shutil.copy(f, os.path.join(out, 'pickle'))
for f in glob.glob('tests/data/insightface/*/*.onnx'):  # the tiny SCRFD and IResNet exports
    shutil.copy(f, os.path.join(out, 'onnx'))
for f in glob.glob('examples/input/*.png'):
    shutil.copy(f, os.path.join(out, 'png'))

# Adjacent C string literals joined, unescaped; those holding a workflow or a ComfyUI prompt.
LIT = re.compile(r'"((?:[^"\\\n]|\\.)*)"')
for f in glob.glob('tests/**/*.c', recursive=True):
    src = open(f, errors='replace').read()
    groups, cur, end = [], None, None
    for m in LIT.finditer(src):
        if cur is not None and not src[end:m.start()].strip():
            cur += m.group(1)
        else:
            if cur is not None:
                groups.append(cur)
            cur = m.group(1)
        end = m.end()
    if cur is not None:
        groups.append(cur)
    for s in groups:
        try:
            b = codecs.decode(s.replace('%%', '%'), 'unicode_escape').encode('latin-1', 'replace')
        except (UnicodeError, ValueError):
            continue
        kind = ('xml' if b'<workflow' in b or b'<node' in b else 'comfy' if b'class_type' in b
                else 'comfy_ui' if b'"nodes"' in b else None)
        if kind:
            put(kind, 't-' + hashlib.sha1(b).hexdigest()[:16], b)

def safetensors(tensors, meta=None):
    header, data = {}, b''
    if meta:
        header['__metadata__'] = meta
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {'dtype': dtype, 'shape': shape, 'data_offsets': [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header).encode()
    h += b' ' * (-len(h) % 8)
    return struct.pack('<Q', len(h)) + h + data

def f32(n):
    return struct.pack('<%df' % n, *[i * 0.25 for i in range(n)])

VERSION_0 = ('F32', [0], b'')
put('safetensors', 'latent.latent', safetensors(
    {'latent_tensor': ('F32', [1, 4, 2, 2], f32(16)), 'latent_format_version_0': VERSION_0}, {'format': 'pt'}))
put('safetensors', 'old.latent', safetensors({'latent_tensor': ('F32', [1, 4, 2, 2], f32(16))}))
put('safetensors', 'half.latent', safetensors(
    {'latent_tensor': ('F16', [1, 4, 1, 1], b'\x00\x3c' * 4), 'latent_format_version_0': VERSION_0}))
put('safetensors', 'mixed.safetensors', safetensors(
    {'a': ('F16', [2, 2], b'\x00\x3c' * 4), 'b': ('BF16', [3], b'\x80\x3f' * 3), 'c': ('I64', [1], b'\x01' + b'\0' * 7),
     'd': ('U8', [4], b'abcd'), 'e': ('F32', [], f32(1)), 'f': ('F8_E4M3', [2], b'\x01\x02')},
    {'sdflow.random_seed': '7'}))
put('safetensors', 'empty.safetensors', safetensors({}))

def chunk(kind, body):
    return struct.pack('>I', len(body)) + kind + body + struct.pack('>I', zlib.crc32(kind + body))

def png(w, h, depth, ctype, rows, before=b'', after=b''):
    raw = b''.join(b'\0' + r for r in rows)
    return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, depth, ctype, 0, 0, 0)) + before
            + after + chunk(b'IDAT', zlib.compress(raw)) + chunk(b'IEND', b''))

put('png', 'gray16.png', png(2, 2, 16, 0, [b'\x00\x01\xff\xff'] * 2))
put('png', 'palette-trns.png', png(2, 2, 8, 3, [b'\x00\x01'] * 2,
                                   before=chunk(b'PLTE', b'\xff\0\0\0\xff\0') + chunk(b'tRNS', b'\x80')))
put('png', 'rgba.png', png(1, 1, 8, 6, [b'\1\2\3\4']))
workflow = open('graphs/txt2img.xml', 'rb').read()
put('png', 'provenance.png', png(1, 1, 8, 2, [b'\1\2\3'], after=(
    chunk(b'tEXt', b'sdflow:engine\0sdflow 0.1.0')
    + chunk(b'zTXt', b'sdflow:workflow\0\0' + zlib.compress(workflow))
    + chunk(b'tEXt', b'sdflow:provenance\0{"engine":"sdflow 0.1.0","files":{}}')
    + chunk(b'tEXt', b'sdflow:node\0save') + chunk(b'tEXt', b'sdflow:batch_index\x000'))))
put('png', 'itxt.png', png(1, 1, 8, 0, [b'\1'], after=chunk(
    b'iTXt', b'sdflow:workflow\0\0\0\0\0' + open('tests/data/xml/valid.xml', 'rb').read())))

# GGUF: "GGUF", version 3, counts, metadata, tensor infos, data padded to the alignment.
def gstr(s):
    b = s.encode()
    return struct.pack('<Q', len(b)) + b

GGUF_VALUE = {'u8': (0, '<B'), 'i8': (1, '<b'), 'u16': (2, '<H'), 'i16': (3, '<h'), 'u32': (4, '<I'),
              'i32': (5, '<i'), 'f32': (6, '<f'), 'bool': (7, '<?'), 'u64': (10, '<Q'), 'i64': (11, '<q'),
              'f64': (12, '<d')}

def gguf(kvs, tensors, align=32):
    meta = b''
    for key, kind, val in kvs:
        meta += gstr(key)
        if kind == 'str':
            meta += struct.pack('<I', 8) + gstr(val)
        elif kind == 'strs':
            meta += struct.pack('<IIQ', 9, 8, len(val)) + b''.join(gstr(v) for v in val)
        elif kind.endswith('[]'):
            t, fmt = GGUF_VALUE[kind[:-2]]
            meta += struct.pack('<IIQ', 9, t, len(val)) + b''.join(struct.pack(fmt, v) for v in val)
        else:
            t, fmt = GGUF_VALUE[kind]
            meta += struct.pack('<I', t) + struct.pack(fmt, val)
    infos, data = b'', b''
    for name, gtype, ne, raw in tensors:
        infos += gstr(name) + struct.pack('<I', len(ne)) + b''.join(struct.pack('<Q', d) for d in ne)
        infos += struct.pack('<IQ', gtype, len(data))
        data += raw + b'\0' * (-len(raw) % align)
    head = b'GGUF' + struct.pack('<IQQ', 3, len(tensors), len(kvs)) + meta + infos
    return head + b'\0' * (-len(head) % align) + data

# (type id, elements per block, bytes per block); f16 scales of 0x2c00 (1/16) where they sit
GGUF_TYPES = {'F32': (0, 1, 4), 'F16': (1, 1, 2), 'BF16': (30, 1, 2), 'Q4_0': (2, 32, 18), 'Q4_1': (3, 32, 20),
              'Q5_0': (6, 32, 22), 'Q5_1': (7, 32, 24), 'Q8_0': (8, 32, 34), 'Q4_K': (12, 256, 144),
              'Q5_K': (13, 256, 176), 'Q6_K': (14, 256, 210)}

def block(name, i):
    t, n, size = GGUF_TYPES[name]
    raw = bytearray((i * 37 + k * 11) & 0xff for k in range(size))
    if n > 1:
        at = size - 2 if name == 'Q6_K' else 0
        raw[at:at + 2] = b'\x00\x2c'
    return t, n, bytes(raw)

every = []
for i, name in enumerate(GGUF_TYPES):
    t, n, raw = block(name, i)
    every.append((name.lower() + '.weight', t, [n if n > 1 else 4, 1], raw * (4 if n == 1 else 1)))
put('gguf', 'every-type.gguf', gguf([('general.architecture', 'str', 'flux')], every))
put('gguf', 'metadata.gguf', gguf(
    [('general.alignment', 'u32', 64), ('a.u8', 'u8', 7), ('a.i8', 'i8', -7), ('a.u16', 'u16', 700),
     ('a.i16', 'i16', -700), ('a.i32', 'i32', -70000), ('a.f32', 'f32', 0.5), ('a.bool', 'bool', True),
     ('a.u64', 'u64', 2**40), ('a.i64', 'i64', -2**40), ('a.f64', 'f64', 1.25),
     ('a.strs', 'strs', ['<pad>', '</s>', '\u2581a']), ('a.ints', 'i32[]', [1, 2, 3]),
     ('comfy.gguf.orig_shape.conv', 'i32[]', [2, 2, 2, 4])],
    [('conv', 8, [32, 1], block('Q8_0', 3)[2]), ('bias', 0, [2], struct.pack('<2f', 1, 2))], align=64))
put('gguf', 'empty.gguf', gguf([], []))
shutil.copy('tests/data/goldens/t5_tiny.gguf', os.path.join(out, 'gguf'))  # llama.cpp T5 names, Q8_0

for i, row in enumerate(json.load(open('tests/data/goldens/t5_tokens.json', encoding='utf-8'))):
    put('t5', 'golden-%03d' % i, row['text'].encode('utf-8'))
