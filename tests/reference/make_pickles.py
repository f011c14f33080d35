#!/usr/bin/env python3
"""Writes the torch checkpoints of tests/data/pickle (the restricted unpickler's tests,
tests/models/test_pickle.c): real torch.save files, and malicious pickles that a normal
unpickler would run (each would create the file 'sdflow_pickle_marker' in the current
directory). Needs torch and numpy. Run from the repository root:
    python3 tests/reference/make_pickles.py"""
import collections, io, os, pickle, zipfile
import numpy as np
import torch

out = 'tests/data/pickle'
os.makedirs(out, exist_ok=True)
torch.manual_seed(0)
sd = collections.OrderedDict()
sd['model.diffusion_model.w'] = torch.arange(6, dtype=torch.float32).reshape(2, 3)
sd['model.diffusion_model.b'] = torch.tensor([1.5, -2.0, 0.25, 8.0], dtype=torch.float16)
sd['first_stage_model.s'] = torch.tensor(3.0, dtype=torch.bfloat16)
sd['cond_stage_model.p'] = torch.nn.Parameter(torch.ones(2, 2))
sd['view'] = torch.arange(10, dtype=torch.float32)[4:7]  # a view at offset 4 of a shared storage
torch.save({'state_dict': sd, 'global_step': np.int64(470000), 'epoch': 3,
            'hparams': {'lr': 1e-4, 'name': 'tiny', 'betas': (0.9, 0.999)}},
           os.path.join(out, 'tiny.ckpt'))
torch.save(sd, os.path.join(out, 'plain.pt'))
torch.save(sd, os.path.join(out, 'legacy.pt'), _use_new_zipfile_serialization=False)

torch.save({'t': torch.arange(6, dtype=torch.float32).reshape(2, 3).t()}, os.path.join(out, 'strided.pt'))

# Real-ESRGAN's layout: the weights under "params_ema" (a real one beside "params").
torch.save({'params_ema': {'conv_first.weight': torch.ones(4, 3, 3, 3)},
            'params': {'conv_first.weight': torch.zeros(4, 3, 3, 3)}}, os.path.join(out, 'esrgan.pth'))
# A1111's textual-inversion layout, 2 vectors of CLIP-L's width.
torch.save({'string_to_token': {'*': 265}, 'string_to_param': {'*': torch.full((2, 768), 0.5)},
            'name': 'tiny-emb', 'step': 100, 'sd_checkpoint': None, 'sd_checkpoint_name': None},
           os.path.join(out, 'emb.pt'))

MARK = 'touch sdflow_pickle_marker'


class Reduce:
    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def evil_zip(name, obj, protocol=2, raw=None):
    """A torch-layout zip whose data.pkl holds obj (or the raw pickle bytes)."""
    data = raw if raw is not None else pickle.dumps(obj, protocol=protocol)
    with zipfile.ZipFile(os.path.join(out, name), 'w', zipfile.ZIP_STORED) as z:
        z.writestr('archive/data.pkl', data)
        z.writestr('archive/version', '3\n')


import builtins, subprocess
evil_zip('os_system.pt', Reduce(os.system, (MARK,)))
evil_zip('eval.pt', {'state_dict': {'w': Reduce(builtins.eval, ("__import__('os').system('%s')" % MARK,))}})
evil_zip('exec.pt', collections.OrderedDict(a=Reduce(builtins.exec, ("import os; os.system('%s')" % MARK,))))
evil_zip('subprocess.pt', [Reduce(subprocess.Popen, (['touch', 'sdflow_pickle_marker'],))], protocol=4)
# Obfuscated: STACK_GLOBAL from memoized strings, getattr on an allowed module, protocol 0 INST.
evil_zip('stack_global.pt', None, raw=b'\x80\x04\x8c\x02os\x94\x8c\x06system\x94\x93\x94h\x00h\x01\x93'
         b'\x8c\x1a' + MARK.encode() + b'\x85R.')
evil_zip('getattr.pt', None, raw=b'\x80\x02cbuiltins\ngetattr\nctorch._utils\n_rebuild_tensor_v2\n'
         b'X\x0b\x00\x00\x00__globals__\x86R.')
evil_zip('inst.pt', None, raw=b'(S\'' + MARK.encode() + b'\'\nios\nsystem\n.')

# Strided views, materialised by their strides: a transpose at an offset, a permuted slice, an
# expanded (stride 0) row; and the same file with its zip entries deflated (a re-packing zip
# tool's doing; torch.save stores them).
base = torch.arange(40, dtype=torch.float32)
strided = collections.OrderedDict()
strided['t'] = base[4:10].reshape(2, 3).t()                          # offset 4, stride (1, 3)
strided['p'] = torch.arange(24, dtype=torch.float16).reshape(2, 3, 4).permute(2, 0, 1)[1:3]
strided['e'] = torch.tensor([1.0, 2.0, 3.0]).expand(2, 3)
strided['c'] = torch.ones(2, 2)
torch.save(strided, os.path.join(out, 'strided2.pt'))
torch.save(strided, os.path.join(out, 'strided2_legacy.pt'), _use_new_zipfile_serialization=False)


def rezip(src, dst, method):
    with zipfile.ZipFile(os.path.join(out, src)) as zin, \
            zipfile.ZipFile(os.path.join(out, dst), 'w', method) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info.filename), compress_type=method)


rezip('strided2.pt', 'deflated.pt', zipfile.ZIP_DEFLATED)
rezip('strided2.pt', 'bzip2.pt', zipfile.ZIP_BZIP2)
# A deflated entry whose CRC-32 in the central directory is wrong.
raw = bytearray(open(os.path.join(out, 'deflated.pt'), 'rb').read())
name = b'/data/0'
at = raw.find(b'PK\x01\x02')
while at >= 0:
    nl = int.from_bytes(raw[at + 28:at + 30], 'little')
    if raw[at + 46:at + 46 + nl].endswith(name):
        raw[at + 16] ^= 0xff
        break
    at = raw.find(b'PK\x01\x02', at + 4)
open(os.path.join(out, 'bad_crc.pt'), 'wb').write(bytes(raw))


# A deflated entry whose uncompressed size in the central directory is beyond what deflate can
# give from its compressed bytes (a decompression bomb's claim).
raw = bytearray(open(os.path.join(out, 'deflated.pt'), 'rb').read())
at = raw.find(b'PK\x01\x02')
while at >= 0:
    nl = int.from_bytes(raw[at + 28:at + 30], 'little')
    if raw[at + 46:at + 46 + nl].endswith(name):
        raw[at + 24:at + 28] = (1 << 30).to_bytes(4, 'little')
        break
    at = raw.find(b'PK\x01\x02', at + 4)
open(os.path.join(out, 'bomb.pt'), 'wb').write(bytes(raw))


# A strided view that reaches past its storage (6 elements; stride 9 asks for element 10), and
# one that repeats its storage's elements into 80 MB (stride 0).
class StorageRef:
    pass


class BadView:
    def __init__(self, size=(3, 2), stride=(1, 9)):
        self.size, self.stride = size, stride

    def __reduce__(self):
        return torch._utils._rebuild_tensor_v2, (StorageRef(), 0, self.size, self.stride, False,
                                                 collections.OrderedDict())


class TorchPickler(pickle.Pickler):
    def persistent_id(self, obj):
        return ('storage', torch.FloatStorage, '0', 'cpu', 6) if isinstance(obj, StorageRef) else None


buf = io.BytesIO()
TorchPickler(buf, protocol=2).dump(collections.OrderedDict(bad=BadView()))
with zipfile.ZipFile(os.path.join(out, 'past_storage.pt'), 'w', zipfile.ZIP_STORED) as z:
    z.writestr('archive/data.pkl', buf.getvalue())
    z.writestr('archive/data/0', np.arange(6, dtype=np.float32).tobytes())
    z.writestr('archive/version', '3\n')
buf = io.BytesIO()
TorchPickler(buf, protocol=2).dump(collections.OrderedDict(big=BadView((20000000,), (0,))))
with zipfile.ZipFile(os.path.join(out, 'repeated.pt'), 'w', zipfile.ZIP_STORED) as z:
    z.writestr('archive/data.pkl', buf.getvalue())
    z.writestr('archive/data/0', np.arange(6, dtype=np.float32).tobytes())
    z.writestr('archive/version', '3\n')
print('wrote', sorted(os.listdir(out)))
