from .cli import main

if __name__ == "__main__":  # vLLM's engine process (spawn) re-imports the main module
    raise SystemExit(main())
