from services.extractor.main import main

# Guarded: each worker process imports the main module again (multiprocessing's forkserver).
if __name__ == "__main__":
    main()
