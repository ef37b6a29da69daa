from services.intake_chat.config import Settings


def test_defaults_allow_local_development_origins():
    settings = Settings.from_env({})
    assert (settings.host, settings.port) == ("127.0.0.1", 8081)
    assert settings.allowed_origins == ("http://127.0.0.1:*", "http://localhost:*")


def test_allowed_origins_list_is_trimmed():
    settings = Settings.from_env({"TM_CHAT_ALLOWED_ORIGINS": " https://shop.example.com , https://m.example.com,"})
    assert settings.allowed_origins == ("https://shop.example.com", "https://m.example.com")
