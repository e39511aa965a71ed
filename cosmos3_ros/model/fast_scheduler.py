# Copyright 2026 The cosmos3_ros Authors
# SPDX-License-Identifier: Apache-2.0
"""UniPC without host syncs: the scalar coefficients on the CPU, only the tensor updates on the device.

diffusers 0.42.1's ``UniPCMultistepScheduler`` moves each sigma to the sample's device
(``self.sigmas[i].to(device)``, a blocking copy from pageable memory) and solves the small
``R rho = b`` systems with ``torch.linalg.solve`` on that device (another sync), then does
~60 one-element kernels of scalar arithmetic, and keeps its timesteps on the device, which the
pipeline reads back with ``t.item()`` every step. On a GPU each step therefore waits for the
transformer to finish and leaves the GPU idle while the host works through the scalar math:
about 5 ms per scheduler per step for Cosmos 3 Nano, which runs two schedulers (video and
actions).

:class:`SyncFreeUniPCMultistepScheduler` runs the same operations in the same order, with the
scalar ones on the CPU (where the sigmas live) and the tensor ones on the device, with 0-d CPU
tensors as scalar operands (passed by value, no copy) and the ``rho`` vectors copied through
pinned memory without blocking. On the CPU it is bit-identical to the stock scheduler; on a GPU
the scalars may differ from the device-computed ones in the last float32 bit (CPU vs CUDA
``log``/``expm1``, and CUDA divides by a CPU scalar as a multiply by its reciprocal): far below
bf16 noise.
"""

from __future__ import annotations

import torch
from diffusers import UniPCMultistepScheduler


def _to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    if device.type == "cpu":
        return t
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


class SyncFreeUniPCMultistepScheduler(UniPCMultistepScheduler):
    """``UniPCMultistepScheduler`` whose steps never block the host (same math, see module doc).

    ``timesteps`` also stay on the CPU whatever device ``set_timesteps`` is given: the pipeline
    reads each one with ``t.item()`` (a sync when on a GPU) and the scheduler only compares them.
    """

    def set_timesteps(self, num_inference_steps=None, device=None, sigmas=None, mu=None):
        super().set_timesteps(num_inference_steps, device=None, sigmas=sigmas, mu=mu)

    def _uni_terms(self, m0, lambda_s0, h, order: int, newest: int):
        """The terms the UniP predictor and UniC corrector share (as in diffusers): the scaled differences of
        the previous model outputs ``D1s`` (a list), ``R``, ``b``, ``h_phi_1`` and ``B_h``. ``newest`` is
        the sigma index of ``m0`` (the predictor's step index; the corrector's minus one)."""
        model_output_list = self.model_outputs
        rks = []
        D1s = []  # noqa: N806 (stock name)
        for i in range(1, order):
            si = newest - i
            mi = model_output_list[-(i + 1)]
            alpha_si, sigma_si = self._sigma_to_alpha_sigma_t(self.sigmas[si])
            lambda_si = torch.log(alpha_si) - torch.log(sigma_si)
            rk = (lambda_si - lambda_s0) / h
            rks.append(rk)
            D1s.append((mi - m0) / rk)
        rks.append(torch.ones(()))
        rks = torch.stack(rks)

        R = []  # noqa: N806
        b = []
        hh = -h if self.predict_x0 else h
        h_phi_1 = torch.expm1(hh)
        h_phi_k = h_phi_1 / hh - 1
        factorial_i = 1
        if self.config.solver_type == "bh1":
            B_h = hh  # noqa: N806
        elif self.config.solver_type == "bh2":
            B_h = torch.expm1(hh)  # noqa: N806
        else:
            raise NotImplementedError()
        for i in range(1, order + 1):
            R.append(torch.pow(rks, i - 1))
            b.append(h_phi_k * factorial_i / B_h)
            factorial_i *= i + 1
            h_phi_k = h_phi_k / hh - 1 / factorial_i
        R = torch.stack(R)  # noqa: N806
        b = torch.stack(b) if len(b) > 0 else torch.tensor(b)
        return D1s, R, b, h_phi_1, B_h

    def multistep_uni_p_bh_update(self, model_output, *args, sample=None, order=None, **kwargs):
        if args or kwargs or self.solver_p or sample is None or order is None:
            return super().multistep_uni_p_bh_update(model_output, *args, sample=sample, order=order, **kwargs)
        model_output_list = self.model_outputs
        m0 = model_output_list[-1]
        x = sample
        device = sample.device
        sigma_t, sigma_s0 = self.sigmas[self.step_index + 1], self.sigmas[self.step_index]
        alpha_t, sigma_t = self._sigma_to_alpha_sigma_t(sigma_t)
        alpha_s0, sigma_s0 = self._sigma_to_alpha_sigma_t(sigma_s0)
        lambda_t = torch.log(alpha_t) - torch.log(sigma_t)
        lambda_s0 = torch.log(alpha_s0) - torch.log(sigma_s0)
        h = lambda_t - lambda_s0

        D1s, R, b, h_phi_1, B_h = self._uni_terms(m0, lambda_s0, h, order, self.step_index)  # noqa: N806

        if len(D1s) > 0:
            D1s = torch.stack(D1s, dim=1)  # noqa: N806
            if order == 2:
                rhos_p = torch.ones(1, dtype=x.dtype, device=device) * 0.5
            else:
                rhos_p = _to_device(torch.linalg.solve(R[:-1, :-1], b[:-1]).to(x.dtype), device)
        else:
            D1s = None  # noqa: N806

        if self.predict_x0:
            x_t_ = sigma_t / sigma_s0 * x - alpha_t * h_phi_1 * m0
            pred_res = torch.einsum("k,bkc...->bc...", rhos_p, D1s) if D1s is not None else 0
            x_t = x_t_ - alpha_t * B_h * pred_res
        else:
            x_t_ = alpha_t / alpha_s0 * x - sigma_t * h_phi_1 * m0
            pred_res = torch.einsum("k,bkc...->bc...", rhos_p, D1s) if D1s is not None else 0
            x_t = x_t_ - sigma_t * B_h * pred_res
        return x_t.to(x.dtype)

    def multistep_uni_c_bh_update(
        self, this_model_output, *args, last_sample=None, this_sample=None, order=None, **kwargs
    ):
        if args or kwargs or last_sample is None or this_sample is None or order is None:
            return super().multistep_uni_c_bh_update(
                this_model_output, *args, last_sample=last_sample, this_sample=this_sample, order=order, **kwargs
            )
        model_output_list = self.model_outputs
        m0 = model_output_list[-1]
        x = last_sample
        model_t = this_model_output
        device = this_sample.device
        sigma_t, sigma_s0 = self.sigmas[self.step_index], self.sigmas[self.step_index - 1]
        alpha_t, sigma_t = self._sigma_to_alpha_sigma_t(sigma_t)
        alpha_s0, sigma_s0 = self._sigma_to_alpha_sigma_t(sigma_s0)
        lambda_t = torch.log(alpha_t) - torch.log(sigma_t)
        lambda_s0 = torch.log(alpha_s0) - torch.log(sigma_s0)
        h = lambda_t - lambda_s0

        D1s, R, b, h_phi_1, B_h = self._uni_terms(m0, lambda_s0, h, order, self.step_index - 1)  # noqa: N806

        D1s = torch.stack(D1s, dim=1) if len(D1s) > 0 else None  # noqa: N806
        if order == 1:
            rhos_c = torch.ones(1, dtype=x.dtype) * 0.5
        else:
            rhos_c = torch.linalg.solve(R, b).to(x.dtype)

        if self.predict_x0:
            x_t_ = sigma_t / sigma_s0 * x - alpha_t * h_phi_1 * m0
            corr_res = torch.einsum("k,bkc...->bc...", _to_device(rhos_c[:-1], device), D1s) if D1s is not None else 0
            D1_t = model_t - m0  # noqa: N806
            x_t = x_t_ - alpha_t * B_h * (corr_res + rhos_c[-1] * D1_t)
        else:
            x_t_ = alpha_t / alpha_s0 * x - sigma_t * h_phi_1 * m0
            corr_res = torch.einsum("k,bkc...->bc...", _to_device(rhos_c[:-1], device), D1s) if D1s is not None else 0
            D1_t = model_t - m0  # noqa: N806
            x_t = x_t_ - sigma_t * B_h * (corr_res + rhos_c[-1] * D1_t)
        return x_t.to(x.dtype)


def sync_free(scheduler):
    """A :class:`SyncFreeUniPCMultistepScheduler` with ``scheduler``'s config, or ``scheduler`` if not UniPC."""
    if type(scheduler) is UniPCMultistepScheduler:
        return SyncFreeUniPCMultistepScheduler.from_config(scheduler.config)
    return scheduler
