"""Saved-model size: bytes of a dense ``state_dict`` file, and of one that stores only non-zero weights.

Sparse format (what :func:`model_bytes_sparse` measures): the model's ``state_dict`` saved with
``torch.save``, where every floating-point entry whose name ends in ``weight`` and that contains at
least one zero is replaced by a sparse encoding; biases, buffers and zero-free weights stay dense.
Each such weight is stored as whichever of these has fewer index entries (int64 indices, torch's
default; the non-zero values are stored once in both):

* CSR over the weight's 2-D view ``(rows = output units, columns = fan-in)``, i.e. a Conv2d's
  ``(out, in, kh, kw)`` seen as ``(out, in*kh*kw)``: a dict of the three CSR arrays
  ``crow_indices``, ``col_indices``, ``values`` as plain tensors plus the original ``shape``,
  so ``rows + 1 + nnz`` indices. Plain tensors rather than a torch CSR tensor: the same bytes,
  without the beta sparse-CSR API;
* a torch sparse COO tensor over the original shape: ``ndim * nnz`` indices (the only choice for
  1-D weights, and the smaller one only when a 2-D weight has fewer non-zeros than rows).

A weight with few zeros costs more this way than dense; that is the honest price of the format,
so the figure is reported as is rather than falling back to dense.
"""

from __future__ import annotations

import io

import torch
from torch import Tensor, nn


def _saved_bytes(obj: object) -> int:
    """Bytes of ``torch.save(obj)`` written to memory (no file system involved)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getbuffer().nbytes


def model_bytes_dense(model: nn.Module) -> int:
    """Bytes of ``torch.save(model.state_dict())``."""
    return _saved_bytes(model.state_dict())


def _sparse_entry(weight: Tensor) -> object:
    """The smaller of the CSR and COO encodings of ``weight`` (see the module docstring)."""
    nnz = int(torch.count_nonzero(weight))
    coo_indices = weight.dim() * nnz
    if weight.dim() >= 2:
        rows = weight.shape[0]
        csr_indices = rows + 1 + nnz
        if csr_indices < coo_indices:
            # nonzero(as_tuple=True) returns views into one (nnz, 2) buffer and torch.save writes
            # whole buffers, so the column indices are cloned to store only their own nnz entries.
            row_ids, column_ids = torch.nonzero(weight.reshape(rows, -1), as_tuple=True)
            counts = torch.bincount(row_ids, minlength=rows)
            crow_indices = torch.zeros(rows + 1, dtype=torch.int64, device=weight.device)
            crow_indices[1:] = torch.cumsum(counts, 0)
            return {
                "crow_indices": crow_indices,
                "col_indices": column_ids.clone(),
                "values": weight.reshape(rows, -1)[row_ids, column_ids],
                "shape": tuple(weight.shape),
            }
    return weight.to_sparse_coo()


def model_bytes_sparse(model: nn.Module) -> int:
    """Bytes of the model's ``state_dict`` saved with zero-containing weights in sparse form.

    The format is described in the module docstring; compare with :func:`model_bytes_dense`.
    """
    # Replace entries in the state_dict itself so its metadata is saved too: a model without zeros
    # then costs exactly model_bytes_dense, and any difference is the sparse encoding alone.
    state = model.state_dict()
    for name, tensor in state.items():
        is_weight = name.endswith("weight") and tensor.is_floating_point() and tensor.dim() >= 1
        if is_weight and bool((tensor == 0).any()):
            state[name] = _sparse_entry(tensor.detach())
    return _saved_bytes(state)
