"""A1111 facade: ``modules.sd_models.model_data`` (the loaded model, or None)."""

from __future__ import annotations

from modules.service.extensions import context


class _ModelData:
    def get_sd_model(self):
        service = context.current().service
        loaded = service.models.loaded if service is not None else None
        return loaded.model if loaded is not None else None

    @property
    def sd_model(self):
        return self.get_sd_model()


model_data = _ModelData()
